"""Registration of the built-in data sets."""

from __future__ import annotations

import importlib

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, from_arrays
from ddnn.data.registry import Loader, register_dataset
from ddnn.data.split import apply_device_selection
from ddnn.data.synthetic import ABSENT, CLASS_NAMES, SyntheticMVMCConfig, make_synthetic_mvmc_splits


@register_dataset("synthetic-mvmc")
def load_synthetic_mvmc(config: DataConfig) -> DataSplits:
    """The built-in multi-camera data (generated, deterministic by ``config.seed``)."""
    if config.num_train < 0 or config.num_test < 0:
        raise ValueError(
            f"data.num_train / data.num_test must be >= 1 (0 = default 680 / 171), "
            f"got {config.num_train}/{config.num_test}"
        )
    if config.path:
        raise ValueError("synthetic-mvmc is generated, it takes no --data-path")
    splits = make_synthetic_mvmc_splits(
        SyntheticMVMCConfig(
            num_train=config.num_train or SyntheticMVMCConfig.num_train,
            num_test=config.num_test or SyntheticMVMCConfig.num_test,
            seed=config.seed,
        )
    )
    out = {
        name: from_arrays(x, yv, y, tuple(CLASS_NAMES), ABSENT, "synthetic-mvmc")
        for name, (x, yv, y) in splits.items()
    }
    return apply_device_selection(DataSplits(out["train"], out["test"]), config)


# The loaders that live in their own modules, imported on first use so that listing data sets or
# generating synthetic-mvmc imports none of them: name -> (module, function, streaming).
_IMPORTED: dict[str, tuple[str, str, bool]] = {
    "mvmc": ("ddnn.data.mvmc", "load_mvmc", False),  # the paper's MVMC.npz (--data-path FILE)
    # a user's .npz or folder of .npy arrays (--data-path FILE.npz or DIR)
    "npz": ("ddnn.data.npz", "load_npz", True),
    # a user's folder: labels.csv plus one sub-folder of files per device (--data-path DIR)
    "folder": ("ddnn.data.folder", "load_folder", True),
    # Fashion-MNIST split into 6 regions, one per device (Debian's dataset-fashion-mnist)
    "fashion-mnist-6": ("ddnn.data.fashion", "load_fashion_mnist_6", False),
    # 4 vector sensors x 16 features, 3 classes, the class's feature shifted +2 sigma (generated)
    "synthetic-vectors": ("ddnn.data.tabular", "load_synthetic_vectors", False),
    # scikit-learn's real 8x8 digits, one 4x4 quadrant (16 features) per sensor
    "digits-4": ("ddnn.data.tabular", "load_digits_4", False),
    # scikit-learn's real breast cancer set: mean, error and worst views (10 features each)
    "breast-cancer-3": ("ddnn.data.tabular", "load_breast_cancer_3", False),
    # 4 three-axis vibration sensors x 64 steps, 3 classes by frequency (generated)
    "synthetic-series": ("ddnn.data.series", "load_synthetic_series", False),
    # scikit-learn's real 8x8 digits read as series: two rows (2 x 8) per sensor
    "digits-rows-4": ("ddnn.data.series", "load_digits_rows_4", False),
}


def _imported(module: str, function: str) -> Loader:
    """A loader that imports ``module`` when it is first called and runs its ``function``."""

    def load(config: DataConfig) -> DataSplits:
        loader: Loader = getattr(importlib.import_module(module), function)
        return loader(config)

    return load


for _name, (_module, _function, _streaming) in _IMPORTED.items():
    register_dataset(_name, streaming=_streaming)(_imported(_module, _function))
