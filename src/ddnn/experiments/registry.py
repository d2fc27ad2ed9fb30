"""Registered experiments: each is a name, a function producing table rows for one seed, and how
its rows are summarised across seeds; ``get_experiment`` errors list the valid names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ddnn.experiments.runner import ExperimentContext

Row = dict[str, Any]


@dataclass(frozen=True)
class PlotSpec:
    """A figure drawn from the summary rows: ``ys`` against ``x`` (line) or per key (bars).

    ``split_by`` draws one series per value of that column (e.g. one line per protocol);
    ``where`` keeps only summary rows whose columns equal the given values.
    """

    x: str
    ys: tuple[str, ...]
    kind: str = "line"  # "line", "bar" or "scatter" (points labelled with ``label``)
    xlabel: str = ""
    ylabel: str = ""
    label: str = ""
    split_by: str = ""
    where: tuple[tuple[str, Any], ...] = ()
    source: str = "summary"  # "summary" (mean over seeds) or "rows" (per seed; filter by seed)


@dataclass(frozen=True)
class Experiment:
    """One paper table/figure (or one of ours).

    Attributes:
        name: the CLI name.
        title: one line for the report.
        run: trains what it needs through the context and returns rows for the context's seed.
        keys: columns that identify a row across seeds (e.g. the scheme); the rest is averaged.
        description: what is varied and how it is measured (the report prints it).
        paper: the paper's numbers, rows keyed like ``keys`` (None: the paper has no such table).
        columns: the summary columns the report's table shows (mean ± std over seeds).
        plots: the figures of the report.
        table_where: the report's table shows only summary rows with these column values.
    """

    name: str
    title: str
    run: Callable[[ExperimentContext], list[Row]]
    keys: tuple[str, ...]
    description: str = ""
    paper: list[Row] | None = field(default=None)
    columns: tuple[str, ...] = ()
    plots: tuple[PlotSpec, ...] = ()
    table_where: tuple[tuple[str, Any], ...] = ()


_EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (names are unique)."""
    if experiment.name in _EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    _EXPERIMENTS[experiment.name] = experiment
    return experiment


def list_experiments() -> list[str]:
    """Names accepted by ``ddnn experiment``, in the order ``reproduce`` runs them."""
    _load_builtin()
    return list(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; unknown names list the valid ones."""
    _load_builtin()
    if name not in _EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; accepted: {', '.join(_EXPERIMENTS)}")
    return _EXPERIMENTS[name]


def _load_builtin() -> None:
    from ddnn.experiments import catalog  # noqa: F401  (registers the built-in experiments)
