"""Data sets by name: ``load_dataset(config)`` returns train/test splits; errors list valid names."""

from __future__ import annotations

from collections.abc import Callable

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits

Loader = Callable[[DataConfig], DataSplits]
_DATASETS: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name``."""

    def wrap(fn: Loader) -> Loader:
        _DATASETS[name] = fn
        return fn

    return wrap


def list_datasets() -> list[str]:
    """Names accepted by ``--data``."""
    _load_builtin()
    return sorted(_DATASETS)


def load_dataset(config: DataConfig) -> DataSplits:
    """Load the data set ``config.name`` (with a validation split when the config asks for one)."""
    from ddnn.data.split import carve_validation

    _load_builtin()
    if config.name not in _DATASETS:
        raise ValueError(
            f"unknown data set {config.name!r}; accepted: {', '.join(sorted(_DATASETS))}"
        )
    return carve_validation(_DATASETS[config.name](config), config)


def _load_builtin() -> None:
    from ddnn.data import builtin  # noqa: F401  (registers the built-in loaders)
