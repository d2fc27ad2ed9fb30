"""Imports every built-in experiment module, in the order ``ddnn reproduce`` runs them."""

import importlib

MODULES = ("accuracy", "robustness", "device_size", "edge", "calibration")

for _module in MODULES:
    importlib.import_module(f"ddnn.experiments.{_module}")
