"""Registration of the built-in data sets."""

from __future__ import annotations

from ddnn.config import DataConfig
from ddnn.data.dataset import DataSplits, from_arrays
from ddnn.data.registry import register_dataset
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


@register_dataset("mvmc")
def _mvmc(config: DataConfig) -> DataSplits:
    """The paper's ``MVMC.npz`` (``--data-path FILE``)."""
    from ddnn.data.mvmc import load_mvmc

    return load_mvmc(config)


@register_dataset("npz", streaming=True)
def _npz(config: DataConfig) -> DataSplits:
    """A user's ``.npz`` or folder of ``.npy`` arrays (``--data-path FILE.npz`` or ``DIR``)."""
    from ddnn.data.npz import load_npz

    return load_npz(config)


@register_dataset("folder", streaming=True)
def _folder(config: DataConfig) -> DataSplits:
    """A user's folder: ``labels.csv`` plus one sub-folder of files per device (``--data-path DIR``)."""
    from ddnn.data.folder import load_folder

    return load_folder(config)


@register_dataset("fashion-mnist-6")
def _fashion(config: DataConfig) -> DataSplits:
    """Fashion-MNIST split into 6 regions, one per device (Debian's dataset-fashion-mnist)."""
    from ddnn.data.fashion import load_fashion_mnist_6

    return load_fashion_mnist_6(config)


@register_dataset("synthetic-vectors")
def _synthetic_vectors(config: DataConfig) -> DataSplits:
    """4 vector sensors x 16 features, 3 classes, the class's feature shifted +2σ (generated)."""
    from ddnn.data.tabular import load_synthetic_vectors

    return load_synthetic_vectors(config)


@register_dataset("digits-4")
def _digits_4(config: DataConfig) -> DataSplits:
    """scikit-learn's real 8x8 digits, one 4x4 quadrant (16 features) per sensor."""
    from ddnn.data.tabular import load_digits_4

    return load_digits_4(config)


@register_dataset("breast-cancer-3")
def _breast_cancer_3(config: DataConfig) -> DataSplits:
    """scikit-learn's real breast cancer set: mean, error and worst views (10 features each)."""
    from ddnn.data.tabular import load_breast_cancer_3

    return load_breast_cancer_3(config)


@register_dataset("synthetic-series")
def _synthetic_series(config: DataConfig) -> DataSplits:
    """4 three-axis vibration sensors x 64 steps, 3 classes by frequency (generated)."""
    from ddnn.data.series import load_synthetic_series

    return load_synthetic_series(config)


@register_dataset("digits-rows-4")
def _digits_rows_4(config: DataConfig) -> DataSplits:
    """scikit-learn's real 8x8 digits read as series: two rows (2 x 8) per sensor."""
    from ddnn.data.series import load_digits_rows_4

    return load_digits_rows_4(config)
