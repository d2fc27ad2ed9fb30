"""Training keeps freed memory for the next step and hands it back when it ends (glibc only)."""

import platform
import resource

import pytest
import torch

from ddnn.train.memory import reused_memory

BIG = 16 * 2**20  # float32 elements: 64 MiB, above the largest block glibc ever keeps by itself

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)


def _step_faults() -> int:
    """Page faults of one "step": two 64 MiB tensors written, one freed, a smaller one, all freed."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a, b = torch.ones(BIG), torch.ones(BIG)
    del a
    c = torch.ones(BIG // 2)
    del b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_steps_reuse_freed_memory_and_it_is_returned_after():
    with reused_memory() as applied:
        assert applied
        faults = [_step_faults() for _ in range(6)]
        inside = _resident_bytes()
    after = _resident_bytes()
    # The first steps fault their fresh pages in; by the last, every block is reused.
    assert faults[0] > 0 and faults[-1] * 20 <= faults[0], faults
    assert inside - after >= BIG * 4  # the 128 MiB kept for reuse went back to the system


def test_without_it_large_blocks_fault_in_every_step():
    """The control, glibc's own behaviour: blocks above 32 MiB are unmapped when freed."""
    faults = [_step_faults() for _ in range(6)]
    assert faults[-1] * 2 > faults[0], faults
