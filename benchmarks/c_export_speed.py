"""C export of device sections: memory footprint and batch-1 speed of the C build vs PyTorch.

For each device configuration a tiny run is trained (1 epoch, small data: only footprint and
timing matter), device 0 is exported and compiled as the C engine does (``gcc -std=c99 -O2``), and:

- constant bytes (flash), working RAM bytes and wire bytes come from the generated code's
  footprint; the constant bytes are checked against the symbol sizes of the compiled object, and
  gcc's own ``-fstack-usage`` gives an independent figure for the stack;
- the C build must be bit-exact with PyTorch on the test split (checked here too);
- times are per sample at batch size 1, torch on 1 thread: the C function called through ctypes,
  the runtime's ``CDeviceEngine.infer`` (8-bit grid check included), and the PyTorch section.

Goals (issue 6): the device network under the paper's 2 KB, and C at least 10x faster than PyTorch.

Run: OMP_NUM_THREADS=1 python benchmarks/c_export_speed.py [--quick]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from ddnn.config import resolve_config  # noqa: E402
from ddnn.data.dataset import DataSplits  # noqa: E402
from ddnn.data.registry import load_dataset  # noqa: E402
from ddnn.export.build import STRICT_CFLAGS, find_compiler, load_infer  # noqa: E402
from ddnn.export.engine import CDeviceEngine  # noqa: E402
from ddnn.train.checkpoint import load_section  # noqa: E402
from ddnn.wire import pack_bits_batch  # noqa: E402
from ddnn.workflow import train_run  # noqa: E402

# 1 x ConvP(4) (the threshold model); 2-layer devices with last layer f' = 1/2/4/8 after the
# first layer of 4 the experiments fix (device_size.FIXED_FILTERS) and after 16; first layer
# f = 1/2/8 before 4 (the device-memory experiment).
CONFIGS = [
    (4,),
    (4, 1), (4, 2), (4, 4), (4, 8),
    (16, 1), (16, 2), (16, 4), (16, 8),
    (1, 4), (2, 4), (8, 4),
]  # fmt: skip
PAPER_DEVICE_BYTES = 2048
SPEEDUP_GOAL = 10.0
DATA = ["data.num_train=120", "data.num_test=60", "train.epochs=1", "model.cloud.filters=[4]"]


def per_call(fn: Callable[[], object], calls: int, repeats: int = 15) -> float:
    """Best mean seconds per call over ``repeats`` short rounds of ``calls`` calls, after a
    warm-up: the least disturbed by other load on a shared machine."""
    for _ in range(max(calls // 10, 1)):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def _compile_object(c_file: Path, obj: Path, flags: list[str]) -> None:
    cmd = [find_compiler(), *flags, "-c", f"-I{c_file.parent}", str(c_file), "-o", str(obj)]
    subprocess.run(cmd, check=True)


def rodata_bytes(c_file: Path, folder: Path) -> int:
    """Sizes of the read-only data symbols gcc emits for the source (at -O0 none is folded)."""
    obj = folder / "rodata.o"
    _compile_object(c_file, obj, ["-std=c99", "-O0"])
    out = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True, check=True)
    symbols = (line.split() for line in out.stdout.splitlines())
    return sum(int(p[1], 16) for p in symbols if len(p) == 4 and p[2] in "rR")


def gcc_stack_bytes(c_file: Path, folder: Path) -> int:
    """Deepest call chain by ``gcc -fstack-usage`` (x86-64 frames, saved registers included):
    infer, plus the largest layer with its largest helper, plus a popcount helper."""
    obj = folder / "stack.o"
    _compile_object(c_file, obj, [*STRICT_CFLAGS, "-fstack-usage"])
    frames = {}
    for line in obj.with_suffix(".su").read_text().splitlines():
        where, size, _ = line.split("\t")
        frames[where.rsplit(":", 1)[-1]] = int(size)
    infer = sum(v for k, v in frames.items() if k.endswith("_infer"))
    branches = [frames.get("head", 0)]
    for i in {int(m.group(1)) for k in frames if (m := re.match(r"l(\d+)_", k))}:
        helpers = [v for k, v in frames.items() if k.startswith(f"l{i}_") and k != f"l{i}_run"]
        branches.append(frames.get(f"l{i}_run", 0) + max(helpers, default=0))
    popcount = max(
        (v for k, v in frames.items() if k.startswith(("ddnn_pop", "ddnn_bit"))), default=0
    )
    return infer + max(branches) + popcount


@dataclass
class Row:
    config: str
    const_bytes: int
    rodata_bytes: int
    ram_bytes: int
    stack_bytes: int
    wire_bytes: int
    c_us: float
    engine_us: float
    torch_us: float
    exact: bool

    @property
    def speedup(self) -> float:
        return self.torch_us / self.c_us


def measure(filters: tuple[int, ...], splits: DataSplits, root: Path, calls: int) -> Row:
    """Trains a tiny run with these device filters and measures device 0."""
    name = "x".join(map(str, filters))
    run = root / f"run-{name}"
    device = f"model.device.filters=[{','.join(map(str, filters))}]"
    train_run(resolve_config(overrides=[*DATA, device]), run, splits=splits)
    engine = CDeviceEngine(run, 0, build_dir=root / f"build-{name}")
    section, _, _ = load_section(run, "device_0")
    x = splits.test.x[:, 0]
    with torch.no_grad():
        want_scores, want_feats = section(x)
    scores, packed = engine.infer_batch(x.numpy())
    exact = np.array_equal(packed, pack_bits_batch(want_feats.numpy())) and np.allclose(
        scores, want_scores.numpy(), rtol=1e-6, atol=1e-6
    )
    _, fn = load_infer(engine.library, engine.infer_symbol)
    pixels = np.ascontiguousarray(np.rint(x[0].numpy() * 255).astype(np.uint8))
    out_scores = np.zeros(engine.num_classes, np.float32)
    out_feats = np.zeros(engine.footprint["feature_bytes"], np.uint8)
    args = (pixels.ctypes.data, out_scores.ctypes.data, out_feats.ctypes.data)
    sample, one = x[0].numpy(), x[:1]

    def torch_call() -> object:
        with torch.inference_mode():
            return section(one)

    c_file = next(engine.library.parent.glob("*.c"))
    fp = engine.footprint
    return Row(
        config="ConvP(" + ") ConvP(".join(map(str, filters)) + ")",
        const_bytes=fp["const_bytes"],
        rodata_bytes=rodata_bytes(c_file, root),
        ram_bytes=fp["ram_bytes"],
        stack_bytes=gcc_stack_bytes(c_file, root),
        wire_bytes=fp["feature_bytes"] + fp["score_bytes"],
        c_us=per_call(lambda: fn(*args), calls) * 1e6,
        engine_us=per_call(lambda: engine.infer(sample), calls // 4) * 1e6,
        torch_us=per_call(torch_call, calls // 4) * 1e6,
        exact=bool(exact),
    )


def main(quick: bool = False) -> None:
    torch.set_num_threads(1)
    splits = load_dataset(resolve_config(overrides=DATA).data)
    print(f"machine: {machine()}")
    print(f"C build: {find_compiler()} {' '.join(STRICT_CFLAGS)}; torch: batch size 1, 1 thread")
    print(
        f"{'device':<18}{'const B':>8}{'(nm)':>6}{'RAM B':>7}{'(gcc)':>7}{'wire B':>8}"
        f"{'< 2 KB':>8}{'C us':>8}{'engine us':>11}{'torch us':>10}{'speedup':>9}{'exact':>7}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for filters in CONFIGS[:3] if quick else CONFIGS:
            r = measure(filters, splits, Path(tmp), 100 if quick else 400)
            rows.append(r)
            print(
                f"{r.config:<18}{r.const_bytes:>8}{r.rodata_bytes:>6}{r.ram_bytes:>7}"
                f"{r.stack_bytes:>7}{r.wire_bytes:>8}"
                f"{'yes' if r.const_bytes < PAPER_DEVICE_BYTES else 'NO':>8}{r.c_us:>8.1f}"
                f"{r.engine_us:>11.1f}{r.torch_us:>10.1f}{r.speedup:>8.1f}x"
                f"{'yes' if r.exact else 'NO':>7}",
                flush=True,
            )
    slowest = min(r.speedup for r in rows)
    fits = all(r.const_bytes < PAPER_DEVICE_BYTES for r in rows)
    print(
        f"goals: device network < 2 KB in every config: {'met' if fits else 'MISSED'}; "
        f"C >= {SPEEDUP_GOAL:.0f}x PyTorch at batch 1: "
        f"{'met' if slowest >= SPEEDUP_GOAL else 'MISSED'} (lowest {slowest:.1f}x); "
        f"bit-exact on the test split: {'yes' if all(r.exact for r in rows) else 'NO'}"
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
