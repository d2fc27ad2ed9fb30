"""Runtime test fixtures: tiny trained runs, and a guard that fails tests leaving processes or ports."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from process_guard import _children, _listening_ports

from ddnn.cli import main


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fails a test that leaves behind a child process or a listening port it opened itself.

    Only this test process and its descendants are watched: brokers or servers that other
    work on the machine runs are none of the test's business.
    """
    me = os.getpid()
    before_ports = _listening_ports({me, *_children(me)})
    yield
    deadline = time.monotonic() + 5.0
    while True:
        children = _children(me)
        ports = _listening_ports({me, *children}) - before_ports
        if (not children and not ports) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not children, f"test left child processes behind: {sorted(children)}"
    assert not ports, f"test left listening ports behind: {sorted(ports)}"


def train_tiny(out: Path, *overrides: str) -> Path:
    args = ["train", "--data", "synthetic-mvmc", "--out", str(out), "--epochs", "8", "--seed", "2"]
    args += ["data.num_train=600", "data.num_test=96", "model.cloud.filters=[8]", *overrides]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def run_c(tmp_path_factory) -> Path:
    """Configuration c: 6 devices, local aggregator, cloud."""
    return train_tiny(tmp_path_factory.mktemp("run-c"))


@pytest.fixture(scope="session")
def run_f(tmp_path_factory) -> Path:
    """Configuration f: 6 devices in 3 groups, one edge each, and a cloud."""
    return train_tiny(
        tmp_path_factory.mktemp("run-f"),
        "model.edge.groups=[[0,1],[2,3],[4,5]]",
        "model.edge.filters=[8]",
    )
