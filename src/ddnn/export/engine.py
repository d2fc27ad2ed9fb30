"""The C device engine: a device section run through its generated C code, loaded with ctypes.

The runtime's device process uses it to run the very code a microcontroller would. The first use
of a run's device generates and compiles the C (this needs torch, to read the checkpoint); the
build is cached under ``RUN_DIR/c_build/device_K-v<model version>/`` and later uses load it with
numpy and ctypes alone, found by the SHA-256 of the section file.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ddnn.export.build import STRICT_CFLAGS, compile_shared, find_compiler, load_infer
from ddnn.export.c_codegen import GENERATOR_VERSION

log = logging.getLogger(__name__)

BUILD_DIR = "c_build"  # default cache folder inside the run directory
META = "meta.json"
_GRID_TOLERANCE = 1e-3  # in 8-bit levels: how far from k/255 a float pixel may be


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _matches(meta: dict[str, Any] | None, device: int, digest: str, cflags: list[str]) -> bool:
    return (
        meta is not None
        and meta.get("generator") == GENERATOR_VERSION
        and meta.get("device") == device
        and meta.get("section_sha256") == digest
        and meta.get("cflags") == cflags
    )


def _build(run_dir: Path, device: int, root: Path, digest: str, cflags: list[str]) -> Path:
    """Generates and compiles device ``device``; returns the build folder (with ``meta.json``)."""
    from ddnn.export.exporter import generate_run_device, write_source  # imports torch

    source, folded, version = generate_run_device(run_dir, device)
    compiler = find_compiler()
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"device_{device}-v{version:08x}"
    tmp = Path(tempfile.mkdtemp(prefix=f".device_{device}-", dir=root))
    try:
        _, code = write_source(source, tmp)
        library = f"lib{source.name}.so"
        compile_shared([code], tmp / library, cflags, compiler)
        fp = source.footprint
        meta = {
            "generator": GENERATOR_VERSION,
            "device": device,
            "model_version": version,
            "section_sha256": digest,
            "cflags": cflags,
            "compiler": compiler,
            "library": library,
            "infer_symbol": source.infer_symbol,
            "num_classes": folded.num_classes,
            "input_shape": list(folded.input_shape),
            "feature_shape": list(folded.feature_shape),
            "feature_bytes": fp.feature_bytes,
            "footprint": {
                "const_bytes": fp.const_bytes,
                "ram_bytes": fp.ram_bytes,
                "feature_bytes": fp.feature_bytes,
                "score_bytes": fp.score_bytes,
            },
            "ties": len(folded.ties),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():
            if _matches(_read_meta(final), device, digest, cflags):  # built meanwhile
                return final
            shutil.rmtree(final, ignore_errors=True)  # a stale build of another section file
        try:
            os.replace(tmp, final)
        except OSError:  # another process installed it first
            if not _matches(_read_meta(final), device, digest, cflags):
                raise
        log.info("built the C engine of device %d in %s", device, final)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def to_pixels(a: np.ndarray) -> np.ndarray:
    """Float pixels ``k / 255`` -> contiguous uint8 ``k``; anything off that grid is refused."""
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"input must be float pixels k/255 (k = 0..255), got dtype {a.dtype}")
    with np.errstate(invalid="ignore", over="ignore"):
        levels = a * np.float32(255)  # float32 is ample: k/255 * 255 is within 1e-4 of k
        q = np.rint(levels)
        bad = ~(np.abs(levels - q) <= _GRID_TOLERANCE) | (q < 0) | (q > 255)  # NaN is bad too
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"input value {a[index]!r} at index {index} is not an 8-bit pixel value k/255 "
            "(k = 0..255); the C engine runs on 8-bit images"
        )
    return np.ascontiguousarray(q, dtype=np.uint8)


class CDeviceEngine:
    """One device section as generated C, compiled into a shared library and called via ctypes.

    Args:
        run_dir: A run directory made by ``ddnn train``.
        device: Device index K (``sections/device_K.pt``).
        build_dir: Where builds are cached; default ``RUN_DIR/c_build``.

    Attributes:
        num_classes: Length of the score vector.
        input_shape: (C, H, W) of one input image.
        feature_shape: (C, H, W) of the ±1 feature map.
        model_version: The run's model version (stamped on frames).
        footprint: Constant / RAM / wire bytes of the generated code.
        library: Path of the compiled shared library.

    Raises:
        ValueError: For a missing run or section, a device index out of range, or a raw, float
            (non-binary) or non-image device section.
        BuildError: If no C compiler is available or compilation fails.
    """

    def __init__(
        self, run_dir: str | Path, device: int, build_dir: str | Path | None = None
    ) -> None:
        if isinstance(device, bool) or not isinstance(device, int) or device < 0:
            raise ValueError(f"device must be a non-negative integer index, got {device!r}")
        run = Path(run_dir)
        root = Path(build_dir) if build_dir is not None else run / BUILD_DIR
        cflags = list(STRICT_CFLAGS)
        section = run / "sections" / f"device_{device}.pt"
        folder = None
        if section.is_file():
            digest = _sha256(section)
            for candidate in sorted(root.glob(f"device_{device}-v*")):
                if _matches(_read_meta(candidate), device, digest, cflags):
                    folder = candidate
                    break
        else:
            digest = ""
        if folder is None:  # the exporter reports a missing run / section / device clearly
            folder = _build(run, device, root, digest, cflags)
        meta = _read_meta(folder)
        assert meta is not None
        self.device = device
        self.num_classes: int = int(meta["num_classes"])
        self.input_shape: tuple[int, ...] = tuple(int(v) for v in meta["input_shape"])
        self.feature_shape: tuple[int, ...] = tuple(int(v) for v in meta["feature_shape"])
        self.model_version: int = int(meta["model_version"])
        self.footprint: dict[str, int] = dict(meta["footprint"])
        self.library = folder / str(meta["library"])
        self.infer_symbol = str(meta["infer_symbol"])
        self._feature_bytes = int(meta["feature_bytes"])
        self._lib, self._infer = load_infer(self.library, self.infer_symbol)

    def infer_u8(self, pixels: np.ndarray) -> tuple[np.ndarray, bytes]:
        """Runs the C code on 8-bit pixels of ``input_shape``; returns (scores, packed features)."""
        a = np.asarray(pixels)
        if a.shape != self.input_shape or a.dtype != np.uint8:
            raise ValueError(
                f"pixels must be uint8 of shape {self.input_shape}, got {a.dtype} {a.shape}"
            )
        a = np.ascontiguousarray(a)
        scores = np.empty(self.num_classes, dtype=np.float32)
        features = ctypes.create_string_buffer(self._feature_bytes)
        rc = self._infer(a.ctypes.data, scores.ctypes.data, ctypes.addressof(features))
        if rc != 0:  # pragma: no cover - every pointer is valid here
            raise RuntimeError(f"{self.infer_symbol} returned error code {rc}")
        return scores, features.raw

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, bytes]:
        """Runs one input: float pixels ``k / 255`` of ``input_shape`` (what data sets yield).

        Returns:
            ``(num_classes,)`` float32 scores and the packed feature bytes in the codec's layout.

        Raises:
            ValueError: If the shape is wrong or a value is not on the 8-bit grid ``k / 255``.
        """
        a = np.asarray(x)
        if a.shape != self.input_shape:
            raise ValueError(f"input must have shape {self.input_shape}, got {a.shape}")
        scores, packed = self.infer_batch(a[None])
        return scores[0], packed[0].tobytes()

    def infer_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, *input_shape) float pixels -> scores (B, C) float32, packed features (B, n) uint8.

        The batch is checked and quantized at once, then the C code runs sample by sample into
        preallocated outputs (what a sample costs is then the C code's time, not Python's).
        ``infer_batch(x) == infer_prepared(prepare(x))``.

        Raises:
            ValueError: If the shape is wrong or a value is not on the 8-bit grid ``k / 255``.
        """
        return self.infer_prepared(self.prepare(x))

    def prepare(self, x: np.ndarray) -> np.ndarray:
        """(B, *input_shape) float pixels ``k / 255`` -> the (B, *input_shape) uint8 pixels the C
        code reads, checked: a replay quantizes its inputs once, not at every batch.

        Raises:
            ValueError: If the shape is wrong or a value is not on the 8-bit grid ``k / 255``.
        """
        a = np.asarray(x)
        if a.shape[1:] != self.input_shape:
            raise ValueError(
                f"inputs must have shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {a.shape}"
            )
        return to_pixels(a)

    def infer_prepared(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`infer_batch` of inputs already :meth:`prepare`-d (uint8 pixels)."""
        if pixels.dtype != np.uint8 or pixels.shape[1:] != self.input_shape:
            raise ValueError(
                f"pixels must be uint8 of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {pixels.dtype} {pixels.shape}"
            )
        pixels = np.ascontiguousarray(pixels)
        n = len(pixels)
        scores = np.empty((n, self.num_classes), dtype=np.float32)
        packed = np.empty((n, self._feature_bytes), dtype=np.uint8)
        src, dst_s, dst_f = pixels.ctypes.data, scores.ctypes.data, packed.ctypes.data
        step_x, step_s, step_f = pixels[0].nbytes if n else 0, scores.strides[0], packed.strides[0]
        infer = self._infer
        for i in range(n):
            rc = infer(src + i * step_x, dst_s + i * step_s, dst_f + i * step_f)
            if rc != 0:  # pragma: no cover - every pointer is valid here
                raise RuntimeError(f"{self.infer_symbol} returned error code {rc}")
        return scores, packed

    def close(self) -> None:
        """Drops the library handle (the OS unloads it when nothing else holds it)."""
        with contextlib.suppress(AttributeError):
            del self._infer, self._lib
