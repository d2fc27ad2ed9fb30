"""The MQTT runtime: a trained hierarchy served as processes, and its answers out.

``ddnn.runtime.answers(url, namespace=…)`` iterates a deployment's answers as typed
:class:`Answer` objects. Importing this package stays light (no torch, no paho): the heavy
modules load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# ``answers`` is imported eagerly (its module defers its own imports): a lazily resolved name
# would be shadowed by the submodule of the same name once anything imports it.
from ddnn.runtime.answers import AnswerStream, answers

if TYPE_CHECKING:
    from ddnn.runtime.messages import Answer

__all__ = ["Answer", "AnswerStream", "answers"]


def __getattr__(name: str) -> Any:
    if name == "Answer":
        from ddnn.runtime.messages import Answer

        return Answer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
