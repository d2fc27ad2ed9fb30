"""Suite-wide guard: a test that changes torch's thread count gets it restored afterwards.

Training numerics depend on the thread count (summation order), so one test calling
``torch.set_num_threads`` (directly, or through an in-process `ddnn serve`) must not change what
later tests compute.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
