"""``ddnn watch``: a deployment's answers printed live, one line each (or one JSON object each)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from ddnn.runtime.answers import AnswerStream, answer_to_json

if TYPE_CHECKING:
    from ddnn.runtime.messages import Answer


def answer_line(answer: Answer) -> str:
    """One human-readable line, e.g. ``sample 123  cloud  cat (2)  0.93  12.3 ms``.

    Devices not fused (``missing``) and the flags of a degraded answer are appended when there
    are any; a failed sample reads ``sample 123  FAILED  <error>``.
    """
    if answer.failed:
        return f"sample {answer.sample}  FAILED  {answer.error}"
    name = (
        f"{answer.class_name} ({answer.prediction})"
        if answer.class_name
        else (f"class {answer.prediction}")
    )
    parts = [f"sample {answer.sample}", answer.exit, name, f"{answer.confidence:.2f}"]
    if answer.missing:
        parts.append(f"missing {answer.missing}")
    if answer.captured > 0 and answer.answered > 0:
        parts.append(f"{answer.latency_ms:.1f} ms")
    if answer.flags:
        parts.append(f"flags: {', '.join(answer.flags)}")
    return "  ".join(parts)


def add_watch_parser(sub: Any) -> None:
    """Adds ``ddnn watch`` to the CLI's subparsers."""
    from ddnn.runtime.commands import _add_broker_arguments

    p = sub.add_parser("watch", help="print a deployment's answers as they arrive")
    _add_broker_arguments(p)
    _hide(p, "--qos")  # a watcher publishes nothing
    p.add_argument("--json", action="store_true", help="one compact JSON object per answer")
    p.add_argument("--count", type=int, default=None, help="stop after N answers")
    p.add_argument(
        "--timeout", type=float, default=None, help="stop after S seconds without an answer"
    )
    p.set_defaults(func=cmd_watch)


def _hide(p: argparse.ArgumentParser, flag: str) -> None:
    for action in p._actions:
        if flag in action.option_strings:
            action.help = argparse.SUPPRESS


def check_count(count: int | None) -> int | None:
    if count is not None and (isinstance(count, bool) or count < 1):
        raise ValueError(f"--count {count}: give a number of answers >= 1")
    return count


def check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not (0 < timeout < float("inf")):
        raise ValueError(f"--timeout {timeout}: give a finite number of seconds > 0")
    return timeout


def cmd_watch(args: argparse.Namespace) -> int:
    """Print answers until ``--count`` of them were printed or ``--timeout`` passed without one.

    Returns:
        0; 1 when ``--timeout`` ended the watch before ``--count`` answers came.

    Raises:
        ValueError: Bad ``--count`` / ``--timeout``, or a broker that cannot be reached.
    """
    from ddnn.runtime.commands import _broker
    from ddnn.runtime.mqtt import BrokerError
    from ddnn.runtime.protocol import Topics

    count = check_count(args.count)
    timeout = check_timeout(args.timeout)
    try:
        stream = AnswerStream(_broker(args), Topics(args.namespace), timeout=timeout)
    except BrokerError as exc:
        raise ValueError(str(exc)) from None
    show = answer_to_json if args.json else answer_line
    printed = 0
    try:
        with stream:
            for answer in stream:
                print(show(answer), flush=True)
                printed += 1
                if printed == count:
                    break
    except BrokenPipeError:  # `ddnn watch | head`: the reader left; so do we, quietly
        _silence_stdout()
        return 0
    except BrokerError as exc:
        raise ValueError(str(exc)) from None
    if stream.malformed or stream.dropped:
        print(
            f"ddnn watch: {stream.malformed} malformed results message(s) skipped, "
            f"{stream.dropped} dropped",
            file=sys.stderr,
        )
    if count is not None and printed < count:
        print(
            f"ddnn watch: {printed} of {count} answers within a {timeout:g} s timeout",
            file=sys.stderr,
        )
        return 1
    return 0


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # pragma: no cover - stdout is not a file
        pass
