"""Compiles generated C into a shared library with the system C compiler and loads it with ctypes.

Nothing here imports torch: an already-built device library loads with numpy and ctypes alone.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

STRICT_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror")
SHARED_FLAGS = ("-shared", "-fPIC")

InferFn = Callable[[int | None, int | None, int | None], int]


class BuildError(RuntimeError):
    """The C compiler is missing or rejected the generated code."""


def find_compiler() -> str:
    """The C compiler to use: ``$CC``, else ``gcc``, else ``cc``."""
    for name in (os.environ.get("CC"), "gcc", "cc"):
        if name and shutil.which(name):
            return name
    raise BuildError(
        "no C compiler found: install gcc (or set CC to a C99 compiler) to build the C engine"
    )


def compile_shared(
    sources: Sequence[str | Path],
    output: str | Path,
    cflags: Sequence[str] = STRICT_CFLAGS,
    compiler: str | None = None,
) -> Path:
    """Compiles C sources into a shared library.

    Args:
        sources: ``.c`` files; their headers must sit next to them.
        output: Path of the ``.so`` to write.
        cflags: Compiler flags (``-shared -fPIC`` are added).
        compiler: Compiler command; default :func:`find_compiler`.

    Raises:
        BuildError: If there is no compiler or compilation fails (its messages are included).
    """
    cc = compiler or find_compiler()
    out = Path(output)
    includes = sorted({f"-I{Path(s).parent}" for s in sources})
    cmd = [cc, *cflags, *SHARED_FLAGS, *includes, *map(str, sources), "-o", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"compiling {', '.join(Path(s).name for s in sources)} failed "
            f"({' '.join(cmd)}):\n{result.stderr.strip()}"
        )
    return out


def load_infer(library: str | Path, symbol: str) -> tuple[ctypes.CDLL, InferFn]:
    """Loads ``int symbol(const uint8_t *, float *, uint8_t *)`` from a shared library.

    Pointers are passed as plain addresses (``ndarray.ctypes.data``) or ``None`` for NULL.
    """
    lib = ctypes.CDLL(str(Path(library).resolve()))
    fn = getattr(lib, symbol)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return lib, fn
