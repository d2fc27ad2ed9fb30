"""The documentation stays whole: the site builds strictly, the README stays a front page whose
links resolve, and every config key and every ``ddnn`` command is documented."""

import argparse
import dataclasses
import importlib.util
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ddnn.cli import build_parser
from ddnn.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024

# [text](target) and ![alt](target), with an optional "title"; [name]: target definitions;
# src= / href= of HTML tags.
MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HTML_LINK = re.compile(r"""<(?:a|img|source)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)


def _prose(markdown: str) -> str:
    """Markdown without HTML comments, fenced code blocks and code spans (links there are text)."""
    text = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _relative_targets(markdown: str) -> list[str]:
    text = _prose(markdown)
    targets = MD_LINK.findall(text) + MD_DEFINITION.findall(text) + HTML_LINK.findall(text)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", t, re.I)]


def _config_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every leaf key of a config dataclass, dotted (``model.device.filters``), from the code."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.metadata.get("internal"):  # bookkeeping (RunConfig.given), not a config key
            continue
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _config_keys(hints[f.name], f"{name}.")
        else:
            keys.append(name)
    return keys


def _commands(parser: argparse.ArgumentParser, prefix: str = "ddnn") -> list[str]:
    """Every sub-command, nested ones too (``ddnn export c``), and the roles a sub-command takes
    as its first positional choice (``ddnn serve device``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found += _commands(sub, f"{prefix} {name}")
        elif not action.option_strings and action.choices and prefix != "ddnn":
            found += [f"{prefix} {choice}" for choice in action.choices]
    return found


def _docs_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("**/*.md")))


def test_mkdocs_builds_strictly(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed (pip install -e ".[test]" installs it)')
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move depth into docs/"


def test_readme_relative_links_resolve() -> None:
    targets = _relative_targets(README.read_text())
    assert any(t.startswith("docs/") for t in targets), "the README should link the docs pages"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_links_every_docs_page() -> None:
    linked = {t.split("#")[0] for t in _relative_targets(README.read_text())}
    pages = {p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md")}
    assert not pages - linked, f"docs pages the README does not link: {sorted(pages - linked)}"


def test_link_finder_sees_links_and_skips_comments_and_code() -> None:
    text = (
        '[a](docs/a.md) ![b](img/b.svg "t") [c](https://x.org) [d](#top)\n'
        "<!-- [e](nowhere.md) --> `[f](code.md)`\n```\n[g](fenced.md)\n```\n"
        '[h]: docs/h.md\n<img src="pic.png">\n'
    )
    assert sorted(_relative_targets(text)) == ["docs/a.md", "docs/h.md", "img/b.svg", "pic.png"]


def test_every_config_key_is_documented() -> None:
    keys = _config_keys()
    assert "model.device.filters" in keys and "train.device_dropout" in keys  # the walk recurses
    page = (DOCS / "configuration.md").read_text()
    missing = [k for k in keys if f"`{k}`" not in page]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"


def test_documented_config_keys_exist() -> None:
    """The key table names no key the code does not have (a renamed key leaves no stale row)."""
    keys = set(_config_keys())
    page = (DOCS / "configuration.md").read_text()
    rows = re.findall(r"^\| `((?:data|model|train|eval)\.[a-z_.]+)` \|", page, re.M)
    assert len(rows) == len(keys)
    assert not set(rows) - keys, f"unknown keys in the table: {sorted(set(rows) - keys)}"


def test_every_command_is_documented() -> None:
    commands = _commands(build_parser())
    assert "ddnn train" in commands and "ddnn export c" in commands  # nested ones are found
    text = " ".join(_docs_text().split())
    missing = [c for c in commands if not re.search(re.escape(c) + r"(?![\w-])", text)]
    assert not missing, f"ddnn commands the docs never mention: {missing}"
