"""Helpers of the C exporter tests: compile generated C, run it, and the PyTorch reference.

The reference is always the PyTorch device section itself (its forward, packed with the codec's
``pack_bits_batch``), never the exporter's own arithmetic.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import torch

from ddnn.export.c_codegen import CSource
from ddnn.export.exporter import write_source
from ddnn.models.sections import DeviceSection
from ddnn.wire import pack_bits_batch

STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def compile_library(gcc: str, c_file: Path, out: Path, flags=STRICT) -> Path:
    """Compiles one generated source into a shared library with the strict flags."""
    cmd = [gcc, *flags, "-shared", "-fPIC", f"-I{c_file.parent}", str(c_file), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr}"
    return out


def build(gcc: str, source: CSource, folder: Path):
    """Writes and compiles ``source``; returns its ``infer`` function (pointer args as addresses)."""
    _, c_file = write_source(source, folder)
    lib = ctypes.CDLL(str(compile_library(gcc, c_file, folder / f"lib{source.name}.so")))
    fn = getattr(lib, source.infer_symbol)
    fn.argtypes = [ctypes.c_void_p] * 3
    fn.restype = ctypes.c_int
    fn.keepalive = lib  # the library stays loaded while the function is in use
    return fn


def run_c(fn, images: np.ndarray, num_classes: int, feature_bytes: int):
    """(N, C, H, W) uint8 images -> (scores (N, classes) float32, packed (N, bytes) uint8)."""
    scores = np.zeros((len(images), num_classes), np.float32)
    packed = np.zeros((len(images), feature_bytes), np.uint8)
    for k, image in enumerate(images):
        a = np.ascontiguousarray(image, dtype=np.uint8)
        s = np.zeros(num_classes, np.float32)
        p = np.zeros(feature_bytes, np.uint8)
        assert fn(a.ctypes.data, s.ctypes.data, p.ctypes.data) == 0
        scores[k], packed[k] = s, p
    return scores, packed


def torch_reference(section: DeviceSection, images: np.ndarray):
    """The PyTorch section on images k/255 (float32, as the data sets make them)."""
    x = torch.from_numpy(images.astype(np.float32) / np.float32(255))
    with torch.no_grad():
        scores, feats = section(x)
    assert scores is not None
    return scores.numpy(), pack_bits_batch(feats.numpy())


def edge_images(shape, rng: np.random.Generator) -> np.ndarray:
    """Images at the ends of the 8-bit range: 0, 255, 1, 254, checkerboards, random {0, 255}."""
    c, h, w = shape
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    board = ((yy + xx) % 2).astype(np.uint8)
    images = [
        np.zeros(shape, np.uint8),
        np.full(shape, 255, np.uint8),
        np.full(shape, 1, np.uint8),
        np.full(shape, 254, np.uint8),
        np.broadcast_to(board * 255, shape).copy(),
        np.broadcast_to((1 - board) * 255, shape).copy(),
        np.broadcast_to(board * 254 + 1, shape).copy(),
    ]
    images += [rng.choice(np.array([0, 255], np.uint8), size=shape) for _ in range(4)]
    images += [rng.choice(np.array([0, 1, 254, 255], np.uint8), size=shape) for _ in range(4)]
    return np.stack(images)


def _window_sums(signs: np.ndarray, image: np.ndarray, positions) -> list[int]:
    padded = np.pad(image.astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    return [int((signs * padded[:, y : y + 3, x : x + 3]).sum()) for y, x in positions]


def image_on_threshold(
    signs: np.ndarray, shape, i: int, j: int, target: int, rng: np.random.Generator
) -> np.ndarray | None:
    """An 8-bit image whose first-layer max-pooled conv sum at output (i, j) is exactly ``target``.

    Integer local search on the 5x5 pixels under the pooling window (every other pixel is 0):
    move the largest conv sum of the window toward ``target`` one pixel at a time.

    Args:
        signs: (C, 3, 3) ±1 weights of one first-layer filter.
        shape: (C, H, W) of the image.
        i, j: Output position; its window pools conv positions (2i + a, 2j + b), a, b in -1..1.
        target: Wanted pooled sum.
        rng: Random source (the search starts from random pixels).

    Returns:
        The image, or None if the search did not reach ``target``.
    """
    c, h, w = shape
    positions = [
        (2 * i + a, 2 * j + b)
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        if 0 <= 2 * i + a < h and 0 <= 2 * j + b < w
    ]
    image = np.zeros(shape, np.int64)
    rows = slice(max(2 * i - 2, 0), min(2 * i + 3, h))
    cols = slice(max(2 * j - 2, 0), min(2 * j + 3, w))
    image[:, rows, cols] = rng.integers(0, 256, size=image[:, rows, cols].shape)
    for _ in range(20000):
        sums = _window_sums(signs, image, positions)
        top = int(np.argmax(sums))
        gap = target - sums[top]
        if gap == 0:
            return image.astype(np.uint8)
        y0, x0 = positions[top]
        moves = []  # (channel, y, x, direction) that move the top sum toward the target
        for ch in range(c):
            for ky in range(3):
                for kx in range(3):
                    y, x = y0 + ky - 1, x0 + kx - 1
                    if not (0 <= y < h and 0 <= x < w):
                        continue
                    direction = int(np.sign(gap)) * int(signs[ch, ky, kx])
                    value = image[ch, y, x]
                    if (direction > 0 and value < 255) or (direction < 0 and value > 0):
                        moves.append((ch, y, x, direction))
        if not moves:
            return None
        ch, y, x, direction = moves[rng.integers(len(moves))]
        step = max(1, abs(gap) // 4)
        image[ch, y, x] = np.clip(image[ch, y, x] + direction * step, 0, 255)
    return None


@torch.no_grad()
def crafted_section(input_shape, filters, num_classes=3, seed=0) -> DeviceSection:
    """A device section with random ±1 weights and BatchNorm statistics that make every bit count.

    Means sit at the median of the pooled conv sums of random images (so both bit values occur);
    scales have both signs; some channels have gamma = 0 (constant outputs, one with a positive
    and one with a negative shift); binary layers get integer means and zero shift, so pooled sums
    land exactly on BatchNorm's zero; some latent weights are exactly 0 (sign(0) = +1).
    """
    from ddnn.config import DeviceConfig

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    section = DeviceSection(tuple(input_shape), num_classes, DeviceConfig(filters=tuple(filters)))
    section.eval()
    images = rng.integers(0, 256, size=(32, *input_shape)).astype(np.float32) / np.float32(255)
    h = torch.from_numpy(images)
    for k, block in enumerate(section.features):
        block.conv.weight.uniform_(-1, 1)
        block.conv.weight.view(-1)[::7] = 0.0
        pooled = block.pool(block.conv(h))  # (B, F, H', W')
        median = pooled.transpose(0, 1).flatten(1).median(dim=1).values
        f = median.shape[0]
        bn = block.bn
        bn.running_mean.copy_(median if k == 0 else median.round())
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.copy_(torch.rand(f) * 0.8 + 0.2)
        bn.weight.mul_(torch.where(torch.rand(f) < 0.4, -1.0, 1.0))
        bn.bias.copy_((torch.rand(f) - 0.5) * 0.2 if k == 0 else torch.zeros(f))
        if f >= 4:
            bn.weight[1], bn.bias[1] = 0.0, 0.25
            bn.weight[2], bn.bias[2] = 0.0, -0.25
        h = block(h)
    head = section.head
    assert head is not None
    head.linear.weight.uniform_(-1, 1)
    d = head.linear(h.flatten(1))
    head.bn.running_mean.copy_(d.mean(0))
    head.bn.running_var.copy_(d.var(0) + 1.0)
    head.bn.weight.uniform_(-1, 1)
    head.bn.bias.uniform_(-1, 1)
    return section
