"""Device engines: what computes a device section's scores and bit-packed features in a device node.

``TorchDeviceEngine`` runs the trained PyTorch section; ``ddnn.export.engine.CDeviceEngine`` runs
the generated C code (bit-exact with it). Both return exactly what goes on the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class DeviceEngine(Protocol):
    """Computes one device's class scores and packed feature maps for a batch of its inputs."""

    num_classes: int
    input_shape: tuple[int, ...]
    feature_shape: tuple[int, ...]
    model_version: int

    def infer_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, *input_shape) float32 -> scores (B, C) float32, packed features (B, nbytes) uint8."""
        ...

    # Optional, for inputs known in advance (a replay): ``prepare`` checks and converts them once
    # into what the engine computes on, and ``infer_prepared(prepare(x)) == infer_batch(x)``.
    # See :func:`prepare_inputs` and :func:`prepared_inference`.


def prepare_inputs(engine: Any, x: np.ndarray) -> np.ndarray:
    """``x`` as ``engine`` computes on it (the C engine: checked uint8 pixels), or ``x``."""
    prepare = getattr(engine, "prepare", None)
    return x if prepare is None else prepare(x)


def prepared_inference(engine: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The engine's inference on :func:`prepare_inputs`' output."""
    infer = getattr(engine, "infer_prepared", None)
    return engine.infer_batch if infer is None or not hasattr(engine, "prepare") else infer


class TorchDeviceEngine:
    """The trained device section, loaded alone from ``RUN_DIR/sections/device_K.pt``."""

    def __init__(self, run_dir: str | Path, device: int) -> None:
        import torch

        from ddnn.models.sections import DeviceSection
        from ddnn.train.checkpoint import load_section

        module, config, version = load_section(run_dir, f"device_{device}")
        assert isinstance(module, DeviceSection)
        if module.head is None:
            raise ValueError(
                f"device {device} of {str(run_dir)!r} is a raw sensor (no device layers, "
                "configuration a); the runtime serves hierarchies with a local exit"
            )
        self._torch = torch
        self.section = module
        self.num_classes = config.num_classes
        self.input_shape = tuple(module.input_shape)
        self.feature_shape = tuple(module.feature_shape)
        self.model_version = version

    def infer_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ddnn.wire import pack_bits_batch

        with self._torch.inference_mode():
            scores, feats = self.section(self._torch.from_numpy(np.ascontiguousarray(x)))
        assert scores is not None
        return scores.numpy().astype(np.float32), pack_bits_batch(feats.numpy())

    def prepare(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def infer_prepared(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.infer_batch(x)


ENGINES = ("torch", "c")


def create_engine(kind: str, run_dir: str | Path, device: int) -> DeviceEngine:
    """The engine named ``kind`` for device ``device`` of a run."""
    if kind == "torch":
        return TorchDeviceEngine(run_dir, device)
    if kind == "c":
        from ddnn.export.build import BuildError
        from ddnn.export.engine import CDeviceEngine

        try:
            return CDeviceEngine(run_dir, device)
        except BuildError as exc:
            raise ValueError(f"cannot build the C engine of device {device}: {exc}") from None
    raise ValueError(f"unknown engine {kind!r}; accepted: {', '.join(ENGINES)}")
