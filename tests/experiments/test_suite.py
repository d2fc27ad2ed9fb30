"""The experiment runner: one training per distinct config, resumable folders, summaries, goals."""

import json
import math

import pytest
import yaml

from ddnn.config import resolve_config
from ddnn.experiments.measure import threshold_for_local_exit
from ddnn.experiments.registry import get_experiment, list_experiments
from ddnn.experiments.report import write_report
from ddnn.experiments.runner import DONE, ExperimentContext, RunCache, config_key
from ddnn.experiments.suite import VALIDATION_FRACTION, run_suite, suite_base, summarize

TINY = [
    "train.epochs=1",
    "data.num_train=48",
    "data.num_test=24",
    "model.cloud.filters=[4]",
    "train.batch_size=0",
    "data.validation_fraction=0.25",  # 12 of the 48 training samples choose thresholds
]


def _base(*more):
    return resolve_config(overrides=[*TINY, *more])


def test_summary_is_mean_and_sample_std_per_key():
    rows = [
        {"seed": 0, "scheme": "MP-CC", "acc": 90.0, "name": "x"},
        {"seed": 1, "scheme": "MP-CC", "acc": 94.0, "name": "x"},
        {"seed": 0, "scheme": "AP-CC", "acc": 80.0, "name": "y"},
    ]
    summary = summarize(rows, ["scheme"])
    assert [s["scheme"] for s in summary] == ["MP-CC", "AP-CC"]
    assert summary[0]["acc"] == 92.0
    assert math.isclose(summary[0]["acc_std"], math.sqrt(8.0))  # ((2² + 2²) / (2 - 1)) ** 0.5
    assert summary[0]["n"] == 2 and summary[1]["acc_std"] == 0.0 and summary[0]["name"] == "x"


def test_each_config_trains_once_and_a_new_cache_resumes(tmp_path):
    cache = RunCache(tmp_path, jobs=1)
    ctx = ExperimentContext(base=_base(), seed=0, quick=True, cache=cache)
    a, b = ctx.run_many([(), ()])
    again = ctx.run("train.epochs=1")  # same resolved config
    assert cache.trained == 1 and a.run_dir == b.run_dir == again.run_dir
    other = ctx.run("model.local_aggregation=ap")
    assert cache.trained == 2 and other.run_dir != a.run_dir
    resumed = RunCache(tmp_path, jobs=1)
    ctx2 = ExperimentContext(base=_base(), seed=0, quick=True, cache=resumed)
    ctx2.run()
    assert (resumed.trained, resumed.reused) == (0, 1)
    (other.run_dir / DONE).unlink()  # a run cut short before it was marked done is retrained
    ctx2.run("model.local_aggregation=ap")
    assert resumed.trained == 1
    assert config_key(ctx2.config()) == a.run_dir.name
    assert ctx2.config().train.seed == 0 and ctx2.config().data.seed == 0


def test_seed_goes_into_data_and_training(tmp_path):
    ctx = ExperimentContext(base=_base(), seed=3, quick=True, cache=RunCache(tmp_path, 1))
    config = ctx.config("model.local_aggregation=cc")
    assert (config.data.seed, config.train.seed, config.model.local_aggregation) == (3, 3, "cc")


def test_threshold_for_local_exit_lets_the_asked_share_of_the_split_exit(tmp_path):
    ctx = ExperimentContext(base=_base(), seed=0, quick=True, cache=RunCache(tmp_path, 1))
    run = ctx.run()
    assert run.splits.validation is not None
    assert (len(run.splits.validation), len(run.splits.test)) == (12, 24)
    for fraction in (0.0, 0.25, 0.5, 1.0):
        t = threshold_for_local_exit(run, fraction)  # on the validation split unless told
        result = run.model.infer(run.splits.validation.x, {"local": t})
        assert result.exit_fraction("local") == pytest.approx(round(fraction * 12) / 12)
        t = threshold_for_local_exit(run, fraction, "test")
        result = run.model.infer(run.splits.test.x, {"local": t})
        assert result.exit_fraction("local") == pytest.approx(round(fraction * 24) / 24)
    without = ctx.run("data.validation_fraction=0")
    with pytest.raises(ValueError, match="has no validation split .*validation_fraction > 0"):
        threshold_for_local_exit(without, 0.5)


def test_unknown_experiment_lists_the_valid_ones():
    with pytest.raises(
        ValueError, match="unknown experiment 'nope'; accepted: aggregation, threshold"
    ):
        get_experiment("nope")
    assert list_experiments()[:4] == ["aggregation", "threshold", "scaling", "missing"]


def test_folder_of_another_setup_is_refused(tmp_path):
    run_suite(["threshold"], _base(), [0], True, tmp_path, jobs=1)
    with pytest.raises(
        ValueError, match="holds results for another setup .*model.local_aggregation"
    ):
        run_suite(["threshold"], _base("model.local_aggregation=ap"), [0], True, tmp_path, jobs=1)
    with pytest.raises(ValueError, match="another setup .*quick"):
        run_suite(["threshold"], _base(), [0], False, tmp_path, jobs=1)


def test_the_suite_holds_out_a_validation_split_unless_told_and_needs_one(tmp_path):
    assert suite_base(resolve_config(), True, False).data.validation_fraction == VALIDATION_FRACTION
    given = resolve_config(overrides=["data.validation_fraction=0.3"])
    assert suite_base(given, False, False).data.validation_fraction == 0.3
    none = suite_base(resolve_config(overrides=["data.validation_fraction=0"]), True, False)
    assert none.data.validation_fraction == 0  # a value the user gave is kept, 0 included ...
    with pytest.raises(ValueError, match="data.validation_fraction must be > 0 .*got 0"):
        run_suite(["threshold"], none, [0], True, tmp_path, jobs=1)  # ... and then refused
    assert not (tmp_path / "manifest.json").exists()


def test_the_report_shows_the_config_fitted_to_the_data(tmp_path):
    run_suite(["threshold"], _base("data.devices=[0,2]"), [0], True, tmp_path, jobs=1)
    doc = json.loads((tmp_path / "threshold.json").read_text())
    model = doc["base_config"]["model"]  # the default says 6 devices; the data has 2
    assert model["num_devices"] == 2 and model["input_shape"] == [3, 32, 32]
    (trial,) = doc["trials"]  # the base config itself: its run was trained as the report says
    trained = yaml.safe_load((tmp_path / "runs" / trial["run"] / "config.yaml").read_text())
    assert trained["model"] == model
    base_section = write_report(tmp_path).read_text().split("## Base configuration")[1]
    assert "num_devices: 2" in base_section and "fitted to the data" in base_section


def test_every_experiment_runs_and_the_report_is_written(tmp_path):
    names = list_experiments()
    results = run_suite(names, _base(), [0, 1], True, tmp_path, jobs=1)
    assert [r.experiment.name for r in results] == names
    by_name = {r.experiment.name: r for r in results}
    assert len(by_name["aggregation"].summary) == 9
    assert len(by_name["threshold"].rows) == 2 * 8
    scaling = by_name["scaling"].summary
    assert [r["devices"] for r in scaling] == [1, 2, 3, 4, 5, 6]
    missing = by_name["missing"].rows
    # per seed and masked model: none + 6 singles + 15 pairs; then 6 retrained models
    assert sum(r["protocol"].startswith("mask") for r in missing) == 2 * 2 * 22
    assert sum(r["protocol"] == "retrain" for r in missing) == 2 * 6
    assert all(r["drop"] == r["val_drop"] == 0 for r in missing if r["missing"] == "none")
    for row in by_name["filters"].rows:  # T chosen so that 70% of the 12 validation samples exit
        assert row["val_local_exit_pct"] == pytest.approx(100 * 8 / 12, abs=9)
    for name in names[:-1]:  # every row is measured on both splits (calibrate has its own)
        assert all("val_overall_acc" in r and "overall_acc" in r for r in by_name[name].rows)
    edge = {r["config"]: r for r in by_name["edge"].summary}
    assert set(edge) == {"c", "e", "f (2 edges)", "f (3 edges)"}
    assert edge["c"]["edge_to_cloud_bytes"] == 0
    for name in ("e", "f (2 edges)", "f (3 edges)"):
        r = edge[name]
        assert r["local_exit_pct"] + r["edge_exit_pct"] + r["cloud_exit_pct"] == pytest.approx(100)
    report = write_report(tmp_path).read_text()
    for name in names:
        assert f"## {name}:" in report
        assert (tmp_path / f"{name}.csv").is_file() and (tmp_path / f"{name}.png").is_file()
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["seeds"] == [0, 1] and doc["base_config"]["train"]["epochs"] == 1
        assert (doc["choose_on"], doc["report_on"]) == ("validation", "test")
        assert f"| {name} | `{doc['git_revision']}` |" in report  # a revision per experiment
    assert "## Goals" in report and "| MP-CC |" in report
    goals = report.split("## Goals")[1].split("\n## ")[0]
    assert "chosen on the validation split" in goals and "T = " in goals
    assert goals.count("Per seed: 0 ") == 3 and "not judged" not in goals
    # Everything is cached: a rerun trains nothing.
    cache = RunCache(tmp_path / "runs", jobs=1)
    ctx = ExperimentContext(base=_base(), seed=1, quick=True, cache=cache)
    get_experiment("aggregation").run(ctx)
    assert cache.trained == 0 and cache.reused == 9


def test_unfolded_memory_counts_bits_and_floats():
    from ddnn.config import DeviceConfig
    from ddnn.experiments.device_size import unfolded_bytes
    from ddnn.models.sections import DeviceSection

    device = DeviceSection((3, 8, 8), 3, DeviceConfig(filters=(2,)))
    # conv 2x3x3x3 = 54 binary weights; BN(2): 4 floats x 2; head binary FC 2*4*4 -> 3 = 96 bits
    # (+ its BN(3): 4 floats x 3). Bits: 54 + 96 + 32 * (8 + 12) = 790 -> 99 bytes.
    assert unfolded_bytes(device) == math.ceil((54 + 96 + 32 * 20) / 8)


def test_cli_experiment_and_its_errors(tmp_path, capsys):
    from ddnn.cli import main

    out = tmp_path / "report"
    args = ["--quick", "--epochs", "1", "--jobs", "1", "--out", str(out), *TINY[1:]]
    assert main(["experiment", "threshold", *args]) == 0
    printed = capsys.readouterr().out
    assert "| T | local exit % | paper |" in printed and (out / "REPORT.md").is_file()
    assert main(["experiment", "nope", *args]) == 2
    assert "unknown experiment 'nope'; accepted: aggregation" in capsys.readouterr().err
    assert main(["experiment", "threshold", *args, "model.local_aggregation=ap"]) == 2
    assert "holds results for another setup" in capsys.readouterr().err
    assert main(["reproduce", "--seeds", "0", "--out", str(tmp_path / "x")]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err


def test_a_given_value_equal_to_the_papers_is_what_the_trials_train(tmp_path):
    """Trials train in worker processes from the config's JSON; a key the user gave (here the
    paper's device.filters=[4], which vector data would otherwise replace by its own default)
    must still be the one trained, and the report must show what was trained."""
    vectors = ["data.name=synthetic-vectors", "model.device.filters=[4]"]
    run_suite(["threshold"], _base(*vectors), [0], True, tmp_path, jobs=1)
    doc = json.loads((tmp_path / "threshold.json").read_text())
    (trial,) = doc["trials"]
    trained = yaml.safe_load((tmp_path / "runs" / trial["run"] / "config.yaml").read_text())
    assert trained["model"]["device"]["filters"] == [4]  # as given, not the vector default
    assert trained["model"]["input_shape"] == [16]  # the data's, not given
    assert doc["base_config"]["model"] == trained["model"]
    assert doc["base_config_key"] == trial["run"]


def test_a_config_that_disagrees_with_the_data_fails_before_any_training(tmp_path):
    """model.num_devices=6 equals the default but is given; the data keeps 2 devices. The suite
    refuses before it trains anything or claims the folder."""
    base = _base("data.devices=[0,2]", "model.num_devices=6")
    with pytest.raises(ValueError, match=r"^model.num_devices = 6 but data set 'synthetic-mvmc'"):
        run_suite(["threshold"], base, [0], True, tmp_path, jobs=1)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "manifest.json").exists()


def test_without_device_dropout_the_report_still_judges_the_missing_device_goal(tmp_path):
    run_suite(["missing"], _base("train.device_dropout=0"), [0], True, tmp_path, jobs=1)
    rows = json.loads((tmp_path / "missing.json").read_text())["rows"]
    # one masked model (trained without dropout): none + 6 singles + 15 pairs; 6 retrained
    assert sum(r["protocol"] == "mask, dropout 0" for r in rows) == 22
    assert {r["protocol"] for r in rows} == {"mask, dropout 0", "retrain"}
    goals = write_report(tmp_path).read_text().split("## Goals")[1].split("\n## ")[0]
    (line,) = [g for g in goals.splitlines() if g.startswith("- Any one device missing")]
    assert "(trained without device dropout: train.device_dropout = 0)" in line
    assert (
        "**met** on the mean" in line or "**missed** on the mean" in line
    ) and "Per seed: 0 " in line


def test_single_device_dropout_in_the_base_is_the_missing_goal_model(tmp_path):
    base = _base("train.device_dropout=0.3", "train.device_dropout_mode=single")
    run_suite(["missing"], base, [0], True, tmp_path, jobs=1)
    rows = json.loads((tmp_path / "missing.json").read_text())["rows"]
    protocols = {r["protocol"] for r in rows}
    assert protocols == {"mask, single-device dropout 0.3", "mask, dropout 0", "retrain"}
    goals = write_report(tmp_path).read_text().split("## Goals")[1].split("\n## ")[0]
    (line,) = [g for g in goals.splitlines() if g.startswith("- Any one device missing")]
    assert "(device dropout in training)" in line and "mask, single-device dropout 0.3:" in line
    retrain = [r for r in rows if r["protocol"] == "retrain"]
    reference = next(
        r
        for r in rows
        if r["protocol"] == "mask, single-device dropout 0.3" and r["missing"] == "none"
    )
    # the retrained models' drops are measured against the goal model with every device present
    assert all(
        math.isclose(r["drop"], reference["overall_acc"] - r["overall_acc"]) for r in retrain
    )
