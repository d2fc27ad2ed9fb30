"""Fixtures of the C exporter tests: one thread, a C compiler, tiny trained runs (one per config)."""

import shutil

import pytest
import torch

from ddnn.config import resolve_config
from ddnn.data.registry import load_dataset
from ddnn.workflow import train_run

TINY_DATA = ["data.num_train=120", "data.num_test=60", "train.epochs=1", "train.seed=3"]


@pytest.fixture(autouse=True)
def one_thread():
    """PyTorch on one thread in these tests (batch-1 timings and small tensors); the suite-wide
    fixture in tests/conftest.py restores the thread count afterwards."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gcc():
    """The compiler the tests build the generated C with; skips cleanly when there is none."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: the C exporter tests compile the generated code")
    return "gcc"


@pytest.fixture(scope="session")
def splits():
    """The tiny synthetic-mvmc splits every trained run of these tests uses (6 devices, 3x32x32)."""
    return load_dataset(resolve_config(overrides=TINY_DATA).data)


@pytest.fixture(scope="session")
def train_tiny(tmp_path_factory, splits):
    """train_tiny(filters, *overrides) -> run dir, trained once per configuration."""
    runs = {}

    def make(filters, *overrides):
        key = (tuple(filters), overrides)
        if key not in runs:
            out = tmp_path_factory.mktemp("run")
            config = resolve_config(
                overrides=[
                    *TINY_DATA,
                    f"model.device.filters=[{','.join(map(str, filters))}]",
                    "model.cloud.filters=[4]",
                    *overrides,
                ]
            )
            train_run(config, out, splits=splits)
            runs[key] = out
        return runs[key]

    return make
