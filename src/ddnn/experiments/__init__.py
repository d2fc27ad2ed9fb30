"""Experiments that reproduce the DDNN paper's tables and figures, and go past them."""
