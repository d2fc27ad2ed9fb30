"""One room for the wire: models, eval and export read byte figures from `ddnn.wire` only, and
`ddnn.wire` reads nothing of theirs (checked on the source's import statements)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ddnn

SRC = Path(ddnn.__file__).parent
READERS = ("models", "eval", "export")
# Names that are byte figures or wire encodings; wherever they are imported from, it is ddnn.wire.
BYTE_NAME = re.compile(r"byte|BYTE|Byte|pack_bits|HEADER|formula|encode_|codec", re.ASCII)


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) for every import in ``path``; ``name`` is "" for ``import module``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found += [(node.module or "", alias.name) for alias in node.names]
    return found


def _files(package: str) -> list[Path]:
    files = sorted((SRC / package).rglob("*.py"))
    assert files, package
    return files


@pytest.mark.parametrize("package", READERS)
def test_byte_figures_come_from_the_wire_only(package):
    bad = []
    for path in _files(package):
        for module, name in _imports(path):
            where = f"{path.relative_to(SRC)}: {module} {name}".rstrip()
            if module.startswith("ddnn.runtime.codec") or name == "codec":
                bad.append(where)
            elif module == "ddnn.eval.communication" or name == "communication":
                bad.append(where)
            elif BYTE_NAME.search(name) and not module.startswith("ddnn.wire"):
                bad.append(where)
    assert bad == []


def test_the_old_accounting_module_is_gone():
    assert not (SRC / "eval" / "communication.py").exists()
    for package in READERS:
        for path in _files(package):
            assert "HEADER_BYTES" not in path.read_text(), path


def test_models_do_not_import_eval():
    for path in _files("models"):
        assert not [m for m, _ in _imports(path) if m.startswith("ddnn.eval")], path


def test_the_wire_imports_none_of_its_readers():
    upper = ("models", "eval", "export", "runtime", "train", "data", "nn", "experiments")
    for path in _files("wire"):
        for module, _ in _imports(path):
            assert not any(module.startswith(f"ddnn.{u}") for u in upper), (path, module)
    # (torch only under TYPE_CHECKING or when given a tensor: test_wire_isolation.py loads it)


def test_the_check_would_catch_an_old_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from ddnn.runtime.codec import HEADER_BYTES\nfrom ddnn.eval.evaluate import LinkBytes\n"
    )
    modules = _imports(bad)
    assert modules == [("ddnn.runtime.codec", "HEADER_BYTES"), ("ddnn.eval.evaluate", "LinkBytes")]
    assert all(BYTE_NAME.search(name) for _, name in modules)
