"""Cheap exploration for the missing-device goal (EXPLORATION.md): trains only the missing
experiment's goal model (presence mask, the base config's train.device_dropout), through the same
suite machinery (30 epochs unless train.epochs=… is given, 20 % validation split, T = 0.8), and
prints every single-device drop on test and validation. Trains in this process, one job.

usage: python explore_mask_only.py OUT SEEDS [one] key=value ...
  SEEDS: N (seeds 0..N-1) or a list such as 5,6,7,8,9
  one:   "with probability p, exactly one uniformly chosen device absent" instead of independent
         per-device dropout: now train.device_dropout_mode=single (same random draws)
"""

import json
import sys
import time
from pathlib import Path

from ddnn.config import resolve_config
from ddnn.experiments import robustness
from ddnn.experiments.goals import mask_protocol
from ddnn.experiments.measure import on_both_splits
from ddnn.experiments.registry import Experiment
from ddnn.experiments.runner import RunCache, load_splits
from ddnn.experiments.suite import run_experiment, suite_base

out, seeds, *rest = sys.argv[1:]
mode_one = bool(rest) and rest[0] == "one"
overrides = rest[1:] if mode_one else rest

if mode_one:  # measured with a monkeypatch before the trainer had the mode; the same draws
    overrides = [*overrides, "train.device_dropout_mode=single"]
elif not any(o.startswith("train.device_dropout_mode=") for o in overrides):
    # without "one" the commands in EXPLORATION.md measured independent dropout, the default then
    overrides = [*overrides, "train.device_dropout_mode=independent"]


def maskonly(ctx):
    base = ctx.config()
    n = load_splits(base.data).train.num_devices
    p = base.train.device_dropout
    run = ctx.run_many([(f"train.device_dropout={p}",)])[0]
    rows, ref = [], None
    for absent in [()] + [(k,) for k in range(n)]:
        f = on_both_splits(run, robustness.PAPER_T, missing=absent)
        ref = ref or f
        rows.append(
            {
                "protocol": mask_protocol(p, base.train.device_dropout_mode),
                "missing": "+".join(map(str, absent)) or "none",
                "num_missing": len(absent),
                **f,
                "drop": ref["overall_acc"] - f["overall_acc"],
                "val_drop": ref["val_overall_acc"] - f["val_overall_acc"],
            }
        )
    return rows


exp = Experiment(
    name="maskonly",
    title="mask only",
    run=maskonly,
    keys=("protocol", "missing"),
    description="",
    paper=[],
    columns=("overall_acc", "drop"),
    plots=(),
)
base = suite_base(
    resolve_config(overrides=list(overrides)),
    quick=False,
    epochs_given=any(o.startswith("train.epochs=") for o in overrides),
)
t = time.time()
Path(out).mkdir(parents=True, exist_ok=True)
cache = RunCache(Path(out) / "runs", 1)
try:
    result = run_experiment(
        exp,
        base,
        ([int(x) for x in seeds.split(",")] if "," in seeds else list(range(int(seeds)))),
        False,
        cache,
    )
finally:
    cache.close()
rows = result.rows
(Path(out) / "rows.json").write_text(json.dumps(rows, indent=1, default=str))
print(
    f"mode={'one' if mode_one else 'indep'} overrides={overrides} seeds={seeds} {time.time() - t:.0f}s"
)
for s in sorted({r["seed"] for r in rows}):
    rs = [r for r in rows if r["seed"] == s]
    none = rs[0]
    worst = max(rs[1:], key=lambda r: r["drop"])
    print(
        f" seed {s}: overall {none['overall_acc']:.1f} cloud {none['cloud_acc']:.1f} local_exit {none['local_exit_pct']:.1f} "
        f"drops "
        + " ".join(f"{r['drop']:.1f}" for r in rs[1:])
        + f" worst {worst['missing']} {worst['drop']:.1f}"
    )
for r in result.summary:
    print(
        f" mean missing {r['missing']}: overall {r['overall_acc']:.1f} cloud {r['cloud_acc']:.1f} local_exit {r['local_exit_pct']:.1f} drop {r['drop']:.2f} val_drop {r['val_drop']:.2f} val_overall {r['val_overall_acc']:.1f} val_cloud {r['val_cloud_acc']:.1f}"
    )
singles = [r for r in result.summary if r["num_missing"] == 1]
print(
    f" WORST test {max(r['drop'] for r in singles):.2f}  WORST val {max(r['val_drop'] for r in singles):.2f}"
)
