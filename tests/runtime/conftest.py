"""Runtime test fixtures: tiny trained runs, and a guard that fails tests leaving processes or ports."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ddnn.cli import main


def _children(root: int) -> set[int]:
    """Every live descendant process of ``root`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is gone, only not yet reaped
            continue
        parents[int(entry)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fails a test that leaves a child process or a listening port behind."""
    before_ports = _listening_ports()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        children = _children(os.getpid())
        ports = _listening_ports() - before_ports
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
