"""The goals on hand-made results: choices made on validation, verdicts per seed, nothing dropped."""

from ddnn.experiments.goals import goal_lines, judge_threshold
from ddnn.experiments.report import provenance_lines
from ddnn.experiments.suite import summarize


def _doc(name, keys, rows, **extra):
    """A document as the suite writes it: per-seed rows and their summary (mean over seeds)."""
    return {
        "experiment": name,
        "keys": keys,
        "seeds": list(dict.fromkeys(r["seed"] for r in rows)),
        "rows": rows,
        "summary": summarize(rows, keys),
        **extra,
    }


def _threshold_row(seed, t, val, test, local=60.0, reduction=50.0):
    """``val``/``test``: (overall, cloud-only) accuracy on that split."""
    return {
        "seed": seed,
        "T": t,
        "local_exit_pct": local,
        "overall_acc": test[0],
        "cloud_acc": test[1],
        "bytes_per_device": 3072 / reduction,
        "reduction": reduction,
        "val_local_exit_pct": local,
        "val_overall_acc": val[0],
        "val_cloud_acc": val[1],
    }


def test_the_threshold_is_chosen_on_validation_not_on_test():
    # On test T = 0.7 looks best (+3 points over cloud-only) and T = 0.8 is below cloud-only;
    # on validation T = 0.8 is best. The goal takes 0.8 and reports its test miss.
    rows = [
        _threshold_row(0, 0.7, val=(91.0, 90.0), test=(93.0, 90.0)),
        _threshold_row(0, 0.8, val=(92.0, 90.0), test=(89.5, 90.0)),
        _threshold_row(0, 0.9, val=(95.0, 90.0), test=(95.0, 90.0), local=40.0),  # too few exits
    ]
    verdict = judge_threshold(rows)
    assert not verdict.ok and verdict.picked == "T = 0.8"
    assert verdict.miss == "overall 0.5 points below cloud-only"
    (line,) = goal_lines([_doc("threshold", ["T"], rows)])
    assert "**missed** on the mean (overall 0.5 points below cloud-only)" in line
    assert "T = 0.8 chosen on validation (overall 92.0% vs cloud-only 90.0%" in line
    assert "on test: overall 89.5% vs cloud-only 90.0%" in line
    assert line.endswith("Per seed: 0 missed (T = 0.8, overall 0.5 points below cloud-only).")


def test_test_split_local_exits_and_bytes_are_judged_at_the_chosen_threshold():
    row = _threshold_row(0, 0.8, val=(92.0, 90.0), test=(92.0, 90.0), reduction=12.5)
    row["local_exit_pct"] = 45.0  # enough local exits on validation, not on test
    verdict = judge_threshold([row])
    assert not verdict.ok
    assert verdict.miss == "45.0% local exits < 50%; reduction 12.5× < 20×"


def test_each_seed_chooses_its_own_threshold_and_gets_its_own_verdict():
    rows = [
        _threshold_row(0, 0.7, val=(91.0, 90.0), test=(92.0, 90.0)),
        _threshold_row(0, 0.8, val=(90.0, 90.0), test=(95.0, 90.0)),
        _threshold_row(1, 0.7, val=(90.0, 90.0), test=(91.0, 90.0)),
        _threshold_row(1, 0.8, val=(92.0, 90.0), test=(89.6, 90.0)),
    ]
    (line,) = goal_lines([_doc("threshold", ["T"], rows)])
    # Mean over seeds: validation margins 0.5 (T = 0.7) and 1.0 (T = 0.8) -> T = 0.8, whose mean
    # test margin is +2.3: met on the mean, although seed 1 alone misses.
    assert "**met** on the mean — T = 0.8 chosen on validation" in line
    assert (
        "Per seed: 0 met (T = 0.7), 1 missed (T = 0.8, overall 0.4 points below cloud-only)."
        in line
    )


def test_no_threshold_with_enough_local_exits_on_validation_is_a_miss():
    rows = [_threshold_row(0, 0.5, val=(92.0, 90.0), test=(92.0, 90.0), local=30.0)]
    (line,) = goal_lines([_doc("threshold", ["T"], rows)])
    assert "**missed** on the mean (no T sends ≥ 50% of validation samples out locally)" in line
    assert "at most 30.0% of validation samples exit locally at any T" in line


def test_rows_without_validation_measurements_are_not_judged():
    rows = [_threshold_row(0, 0.8, val=(92.0, 90.0), test=(92.0, 90.0))]
    for row in rows:
        for key in [k for k in row if k.startswith("val_")]:
            del row[key]
    (line,) = goal_lines([_doc("threshold", ["T"], rows)])
    assert "not judged because its rows have no validation-split measurements" in line


def test_the_best_scheme_is_the_validation_best_and_the_gap_is_on_test():
    def row(seed, scheme, val, test):
        return {"seed": seed, "scheme": scheme, "val_overall_acc": val, "overall_acc": test}

    rows = [
        row(0, "CC-CC", 97.0, 95.0),  # best on test, not on validation
        row(0, "AP-CC", 99.0, 94.0),
        row(0, "MP-CC", 98.0, 92.5),
        row(1, "CC-CC", 96.0, 95.0),
        row(1, "AP-CC", 95.0, 94.0),
        row(1, "MP-CC", 97.0, 94.5),
    ]
    (line,) = goal_lines([_doc("aggregation", ["scheme"], rows)])
    # Mean over seeds on validation: MP-CC 97.5 > AP-CC 97.0 > CC-CC 96.5, so rank 1.
    assert "**met** on the mean — on validation MP-CC ranks 1 of 3" in line
    # Seed 0: AP-CC is best on validation; on test it beats MP-CC by 1.5 points (0.5 too many).
    # Seed 1: MP-CC is best on validation (CC-CC's better test score does not count).
    assert (
        "Per seed: 0 missed (rank 2, 0.5 points beyond the margin on test), 1 met (rank 1)." in line
    )


def _missing_rows(protocol, drops_by_seed):
    rows = []
    for seed, drops in drops_by_seed.items():
        rows.append(
            {"seed": seed, "protocol": protocol, "missing": "none", "num_missing": 0, "drop": 0.0}
        )
        for device, drop in enumerate(drops):
            rows.append(
                {
                    "seed": seed,
                    "protocol": protocol,
                    "missing": str(device),
                    "num_missing": 1,
                    "drop": drop,
                }
            )
    return rows


def _missing_doc(dropout, rows, mode=None):
    train = {"device_dropout": dropout} | ({} if mode is None else {"device_dropout_mode": mode})
    return _doc("missing", ["protocol", "missing"], rows, base_config={"train": train})


def test_the_missing_goal_is_judged_on_the_mean_and_per_seed():
    rows = _missing_rows(
        "mask, dropout 0.15", {0: [1.0, 0.5, 2.0], 1: [3.4, 1.0, 0.0], 2: [0.5, 2.5, 1.0]}
    )
    rows += _missing_rows("retrain", {0: [1.0, 0.0, 0.0], 1: [2.0, 0.0, 0.0], 2: [0.0, 0.0, 0.0]})
    lines = goal_lines([_missing_doc(0.15, rows)])
    assert len(lines) == 2
    goal, comparison = lines
    assert goal.startswith(
        "- Any one device missing at test time drops overall accuracy ≤ 3 points (device dropout "
        "in training): **met** on the mean — mask, dropout 0.15: worst single device 0 1.6 points."
    )
    assert goal.endswith(
        "Per seed: 0 met (device 2), 1 missed (device 0, by 0.4 points), 2 met (device 1)."
    )
    assert comparison == "- For comparison, retrain: worst single device 0 1.0 points."


def test_the_missing_goal_judges_the_single_device_dropout_model_when_the_base_uses_it():
    rows = _missing_rows("mask, single-device dropout 0.3", {0: [1.0, 2.0], 1: [2.0, 1.0]})
    rows += _missing_rows("mask, dropout 0", {0: [5.0, 1.0], 1: [4.0, 1.0]})
    goal, comparison = goal_lines([_missing_doc(0.3, rows, "single")])
    assert "**met** on the mean — mask, single-device dropout 0.3: worst single device" in goal
    assert comparison == "- For comparison, mask, dropout 0: worst single device 0 4.5 points."


def test_without_device_dropout_the_missing_goal_is_still_judged():
    rows = _missing_rows("mask, dropout 0", {0: [4.5, 1.0], 1: [3.5, 0.5]})
    (goal,) = goal_lines([_missing_doc(0.0, rows)])
    assert "(trained without device dropout: train.device_dropout = 0)" in goal
    assert "**missed** on the mean (by 1.0 points) — mask, dropout 0: worst single device 0" in goal
    assert (
        "Per seed: 0 missed (device 0, by 1.5 points), 1 missed (device 0, by 0.5 points)." in goal
    )


def test_a_missing_goal_that_cannot_be_judged_says_why():
    rows = _missing_rows("mask, dropout 0", {0: [1.0, 1.0]})
    lines = goal_lines([_missing_doc(0.15, rows)])
    assert lines[0] == (
        "- Any one device missing at test time drops overall accuracy ≤ 3 points (device dropout "
        "in training): not judged because the missing experiment has no rows for protocol "
        "'mask, dropout 0.15'."
    )
    assert lines[1] == "- For comparison, mask, dropout 0: worst single device 0 1.0 points."
    (one_device,) = goal_lines(
        [_missing_doc(0.15, _missing_rows("mask, dropout 0.15", {0: [0.0]}))]
    )
    assert "not judged because the data has one device" in one_device
    (unknown,) = goal_lines([_doc("missing", ["protocol", "missing"], rows)])
    assert "not judged because the document does not record" in unknown


def test_the_report_gives_every_experiment_its_revision():
    docs = [
        {"experiment": "aggregation", "git_revision": "abc1234", "seconds": 12.4},
        {"experiment": "threshold", "git_revision": "abc1234+dirty", "seconds": 3.0},
    ]
    lines = provenance_lines(docs)
    assert lines[0] == (
        "- git revision: the experiments were run at 2 revisions (`abc1234`, `abc1234+dirty`); "
        "see the table"
    )
    assert "| aggregation | `abc1234` | 12 s |" in lines
    assert "| threshold | `abc1234+dirty` | 3 s |" in lines
    same = provenance_lines(docs[:1] * 2)
    assert same[0] == "- git revision: `abc1234` for every experiment"
    assert same.count("| aggregation | `abc1234` | 12 s |") == 2
