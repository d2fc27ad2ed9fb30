"""Array-input helpers shared by the payload encoders; torch is used only if already imported."""

from __future__ import annotations

import operator
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor
else:
    ArrayLike = Any

BytesLike = bytes | bytearray | memoryview


def is_tensor(x: object) -> TypeGuard[torch.Tensor]:
    """Whether ``x`` is a torch tensor, without importing torch (a tensor implies it is loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def to_numpy(x: ArrayLike, what: str) -> np.ndarray:
    """Returns ``x`` as a numpy array; tensors are detached and copied to the CPU."""
    if is_tensor(x):
        t = x.detach().cpu()
        try:
            return t.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return t.float().numpy()
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    return x


def check_real(a: np.ndarray, what: str) -> None:
    """Rejects dtypes that are not integer or real float (bool, complex, object, strings)."""
    if a.dtype.kind not in "iuf":  # signed, unsigned, real float; not bool, complex, object, …
        raise ValueError(f"{what} must have an integer or float dtype, got {a.dtype}")


def check_int(value: int, name: str, low: int, high: int) -> int:
    """Returns ``value`` as an int in ``[low, high]``, or raises ValueError naming the field."""
    if type(value) is int and low <= value <= high:  # the usual case, checked at once
        return value
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got a bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name} must be an integer in [{low}, {high}], got {type(value).__name__}"
        ) from None
    if not low <= v <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {v}")
    return v


def check_shape(shape: tuple[int, ...], what: str = "shape") -> tuple[int, ...]:
    """Returns a per-sample shape as a tuple of positive ints (at least one dim)."""
    try:
        dims = tuple(operator.index(d) for d in shape)
    except TypeError:
        raise ValueError(f"{what} must be a tuple of integers, got {shape!r}") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{what} must have at least one dim, all >= 1, got {dims}")
    return dims
