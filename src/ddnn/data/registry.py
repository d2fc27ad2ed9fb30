"""Data sets by name: ``load_dataset(config)`` returns train/test splits; errors list valid names."""

from __future__ import annotations

from collections.abc import Callable

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits

Loader = Callable[[DataConfig], DataSplits]
_DATASETS: dict[str, Loader] = {}
_STREAMING: set[str] = set()  # loaders that honour data.in_memory=false


def register_dataset(name: str, streaming: bool = False) -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name``; ``streaming``: it can leave the inputs on
    disk (``data.in_memory=false``, returning ``MappedDataset`` splits)."""

    def wrap(fn: Loader) -> Loader:
        _DATASETS[name] = fn
        if streaming:
            _STREAMING.add(name)
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
    if config.workers < 0:
        raise ValueError(
            f"data.workers must be >= 0 (0 = read in the main process), got {config.workers}"
        )
    if not config.in_memory and config.name not in _STREAMING:
        raise ValueError(
            f"data.in_memory=false reads files on demand; {config.name!r} is loaded into memory. "
            f"Accepted with data.in_memory=false: {', '.join(sorted(_STREAMING))}"
        )
    return carve_validation(_DATASETS[config.name](config), config)


def _load_builtin() -> None:
    from ddnn.data import builtin  # noqa: F401  (registers the built-in loaders)
