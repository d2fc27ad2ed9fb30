"""Deployment options and runtime flags: one checking rule per option, for files and CLI alike.

A deployment file's ``options`` and the flags of ``ddnn serve`` / ``run-client`` / ``deploy`` go
through the same rules, so a value refused on the command line is refused in a file too, with
the same message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ddnn.config import ModelConfig
from ddnn.runtime.engine import ENGINES


@dataclass(frozen=True)
class Number:
    """A numeric option: an integer or a finite number, at least ``low`` (above it if ``strict``)."""

    low: float
    strict: bool = False
    integer: bool = False

    def __call__(self, value: Any) -> int | float:
        kind = "an integer" if self.integer else "a finite number"
        accepted = f"{kind} {'>' if self.strict else '>='} {self.low:g}"
        number: int | float | None = None
        if isinstance(value, str):
            try:
                number = int(value) if self.integer else float(value)
            except ValueError:
                pass
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = value if not self.integer or isinstance(value, int) else None
        if number is None or not math.isfinite(number):
            raise ValueError(f"{value!r} is not {accepted}")
        if number <= self.low if self.strict else number < self.low:
            raise ValueError(f"{value!r} is not {accepted}")
        return number


@dataclass(frozen=True)
class Choice:
    """An option that takes one of a few values (compared as text: YAML ``1`` or CLI ``"1"``)."""

    choices: Sequence[Any]

    def __call__(self, value: Any) -> Any:
        for choice in self.choices:
            if not isinstance(value, bool) and str(value) == str(choice):
                return choice
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, self.choices))}")


def readable_file(value: Any) -> str:
    """A file that exists and can be read (certificates and keys, checked before connecting)."""
    path = str(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(
            f"{path!r} cannot be read ({exc.strerror}); give an existing, readable file"
        ) from None
    return path


def switch(value: Any) -> bool:
    """An on/off option: YAML true or false."""
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def parse_thresholds(text: str | None) -> dict[str, float]:
    """``"0.8"`` (local) or ``"local=0.8,edge=0.6"`` -> a thresholds dict; ``None`` -> {}."""
    accepted = "give T, or local=T,edge=T with T in [0, 1]"
    if text is None:
        return {}
    if not text.strip():
        raise ValueError(f"{text!r} is empty; {accepted}")
    out: dict[str, float] = {}
    for i, item in enumerate(text.split(",")):
        key, _, value = item.rpartition("=")
        key = key.strip() or ("local" if i == 0 else "")
        if key not in ("local", "edge") or key in out:
            raise ValueError(f"{item!r} in {text!r} is not accepted; {accepted}, each once")
        try:
            t = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number; {accepted}") from None
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{value!r} is outside [0, 1]; {accepted}")
        out[key] = t
    return out


def thresholds_for(text: str | None, mc: ModelConfig) -> dict[str, float]:
    """``parse_thresholds`` checked against the hierarchy: an edge threshold needs edges."""
    thresholds = parse_thresholds(text)
    if "edge" in thresholds and not mc.edge.groups:
        raise ValueError(
            f"thresholds {text!r} set an edge threshold, but this run's hierarchy has no edges; "
            "give T or local=T"
        )
    return thresholds


def _threshold_text(value: Any) -> str:
    text = str(value)
    parse_thresholds(text)
    return text


SECONDS = Number(0.0, strict=True)
SPLITS = ("test", "train", "validation")

# The `ddnn serve` flags each kind of node takes from the deployment's options.
SERVE_FLAGS: dict[str, tuple[str, ...]] = {
    "device": ("rate", "batch", "window", "engine", "split", "limit"),
    "aggregator": ("deadline", "upper_timeout", "thresholds", "window"),
    "edge": ("deadline",),
    "cloud": ("deadline",),
}
COMMON_FLAGS = ("ca_file", "qos")

# What a deployment file's ``options`` accepts: exactly what serve_command passes on.
OPTIONS: dict[str, Callable[[Any], Any]] = {
    "rate": Number(0.0),
    "batch": Number(1, integer=True),
    "window": Number(1, integer=True),
    "engine": Choice(ENGINES),
    "split": Choice(SPLITS),
    "limit": Number(1, integer=True),
    "deadline": SECONDS,
    "upper_timeout": SECONDS,
    "thresholds": _threshold_text,
    "ca_file": readable_file,
    "qos": Choice((0, 1)),
    "wait_for_start": switch,
}

# The same rules for the runtime's command-line flags, plus those only the CLI has.
FLAG_RULES: dict[str, Callable[[Any], Any]] = {
    **OPTIONS,
    "cert_file": readable_file,
    "key_file": readable_file,
    "grace": SECONDS,
    "timeout": SECONDS,
    "connect_timeout": SECONDS,
}


def check_options(options: dict[str, Any], mc: ModelConfig, what: str) -> dict[str, Any]:
    """Deployment options with every key known and every value checked like its CLI flag."""
    unknown = sorted(str(k) for k in options if k not in OPTIONS)
    if unknown:
        raise ValueError(f"{what}: unknown option(s) {unknown}; accepted: {', '.join(OPTIONS)}")
    checked = {}
    for key, value in options.items():
        try:
            checked[key] = OPTIONS[key](value)
        except ValueError as exc:
            raise ValueError(f"{what}: options.{key}: {exc}") from None
    if "thresholds" in checked:
        try:
            thresholds_for(checked["thresholds"], mc)
        except ValueError as exc:
            raise ValueError(f"{what}: options.thresholds: {exc}") from None
    return checked
