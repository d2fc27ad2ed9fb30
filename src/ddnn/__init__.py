"""ddnn: distributed deep neural networks with early exits."""

__version__ = "0.1.0"
