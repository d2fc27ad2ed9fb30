"""`ddnn search`: the space gives valid configs, a tiny search writes a usable frontier chosen on
validation, two workers share one SQLite study, and bad input is one line with exit status 2."""

import contextlib
import io
import json
import subprocess
import sys

import optuna
import pytest

from ddnn.cli import main
from ddnn.config import resolve_config
from ddnn.models.ddnn import DDNN
from ddnn.models.validate import validate_model_config
from ddnn.search.space import SearchSpace, edge_groupings, override_keys
from ddnn.train.checkpoint import load_run

TINY = ["data.num_train=60", "data.num_test=30", "model.cloud.filters=[4,4]"]


def _sampled(space: SearchSpace, n: int, seed: int) -> list[list[str]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    points = []
    for _ in range(n):
        trial = study.ask()
        points.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return points


@pytest.mark.parametrize("num_devices", [1, 2, 3, 4, 6])
def test_space_yields_valid_configs(num_devices):
    space = SearchSpace(num_devices=num_devices)
    edges_seen = set()
    for overrides in _sampled(space, 30, seed=num_devices):
        config = resolve_config(overrides=[f"model.num_devices={num_devices}", *overrides])
        validate_model_config(config.model)
        DDNN(config.model)  # builds
        edges_seen.add(config.model.edge.groups)
        if not config.model.edge.groups:
            assert not any(o.startswith("train.edge_weight") for o in overrides)
    assert () in edges_seen and len(edges_seen) >= 2
    assert set(edge_groupings(num_devices)) >= {"none", "one"}


def test_space_mixed_shapes_and_fixed_keys():
    shapes = "[[3,16,16],[1,32]]"
    space = SearchSpace(
        num_devices=2,
        mixed_shapes=True,
        fixed=override_keys(["model.wire.scores=int8", "train={device_dropout: 0.1}"]),
    )
    for overrides in _sampled(space, 20, seed=7):
        keys = override_keys(overrides)
        assert "model.wire.scores" not in keys and "train.device_dropout" not in keys
        assert "model.cloud.aggregation" not in keys  # only cc fuses different shapes
        config = resolve_config(
            overrides=[
                "model.num_devices=2",
                f"model.device_input_shapes={shapes}",
                "model.input_shape=[768]",
                *overrides,
            ]
        )
        validate_model_config(config.model)
        DDNN(config.model)


@pytest.mark.parametrize("fixed_filters", [None, "[8,4]"])
def test_space_precisions(fixed_filters):
    """All-binary, all-float and float-first devices are sampled; float-first flags the first
    block float and every later block and the head binary, for sampled and fixed filters alike.
    The cloud is sampled binary and float."""
    fixed = [f"model.device.filters={fixed_filters}"] if fixed_filters else []
    space = SearchSpace(
        num_devices=4, fixed=override_keys(fixed), fixed_device_layers=2 if fixed else 1
    )
    seen, clouds = set(), set()
    for overrides in _sampled(space, 40, seed=11):
        config = resolve_config(overrides=["model.num_devices=4", *fixed, *overrides])
        device = config.model.device
        flags = device.layer_binary()
        assert len(flags) == len(device.filters) + 1
        if all(flags):
            seen.add("binary")
        elif not any(flags):
            seen.add("float")
        else:
            assert flags == (False,) + (True,) * len(device.filters)
            seen.add("float-first")
        clouds.add(config.model.cloud.binary)
        DDNN(config.model)  # builds
    assert seen == {"binary", "float", "float-first"}
    assert clouds == {True, False}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    stdout = io.StringIO()
    argv = ["search", "--data", "synthetic-mvmc", "--trials", "3", "--epochs", "1"]
    with contextlib.redirect_stdout(stdout):
        rc = main(
            [*argv, "--out", str(out), "--json", "--seed", "3", "--confidence-level", "0.9", *TINY]
        )
    assert rc == 0
    return out, json.loads(stdout.getvalue())


def test_search_writes_the_frontier(searched):
    out, rows = searched
    assert rows and json.loads((out / "pareto.json").read_text()) == rows
    assert (out / "pareto.png").stat().st_size > 1000
    csv_lines = (out / "pareto.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["trial", "accuracy", "bytes_per_device"]
    assert len(csv_lines) == len(rows) + 1
    study = optuna.load_study(
        study_name="ddnn-synthetic-mvmc-6dev", storage=f"sqlite:///{out}/study.db"
    )
    assert len(study.trials) == 3
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["validation_accuracy"] <= 1.0
        assert row["bytes_per_device"] > 0 and row["device_memory_bytes"] > 0
        assert row["threshold_split"] == "validation" and row["accuracy_split"] == "test"
        assert set(row["thresholds"]) >= {"local"}


def test_frontier_runs_load_and_were_calibrated_on_validation(searched):
    out, rows = searched
    for row in rows:
        model, config, _ = load_run(row["run_dir"])
        assert config.data.validation_fraction > 0 and config.train.epochs == 1
        calibration = json.loads(
            (out / "trials" / f"trial-{row['trial']:04d}" / "calibration.json").read_text()
        )
        assert calibration["split"] == "validation"
        target = {"max_accuracy_drop": 1.0, "max_bytes": None, "confidence_level": 0.9}
        assert calibration["target"] == target  # --confidence-level reached every trial
        assert calibration["num_samples"] == round(60 * config.data.validation_fraction)
        assert calibration["thresholds"] == row["thresholds"]
        assert calibration["measured"]["overall_accuracy"] == row["validation_accuracy"]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["evaluate", row["run_dir"], "--thresholds", "0.5"]) == 0
    with contextlib.redirect_stdout(io.StringIO()) as text:
        assert main(["evaluate", rows[0]["run_dir"], "--calibrated", "--json"]) == 0
    assert json.loads(text.getvalue())["rows"][0]["overall_accuracy"] == rows[0]["accuracy"]


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ddnn.cli",
                "search",
                "--data",
                "synthetic-mvmc",
                "--trials",
                "2",
            ]
            + ["--epochs", "1", "--storage", url, "--study", "shared", "--seed", str(seed)]
            + [
                "--out",
                str(tmp_path / f"out{seed}"),
                "--json",
                "data.num_train=40",
                "data.num_test=20",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for seed in (1, 2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=url)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == 4
    assert len({t.user_attrs["session"] for t in finished}) == 2
    assert sorted(t.number for t in finished) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--trials", "0"], "--trials must be >= 1"),
        (["--trials", "-2"], "--trials must be >= 1"),
        (["--trials", "1", "--data", "nope"], "unknown data set 'nope'"),
        (["--trials", "1", "--storage", "postgresql://nohost/x"], "cannot open --storage"),
        (["--trials", "1", "--storage", "no-url"], "not a database URL"),
        (["--trials", "1", "--max-bytes", "0"], "--max-bytes must be"),
        (["--trials", "1", "--max-device-memory", "-5"], "--max-device-memory must be"),
        (["--trials", "1", "--max-bytes", "2.5"], "smallest possible 3 bytes"),
        (["--trials", "1", "--max-bytes", "5", "model.wire.scores=float16"], "smallest possible 6"),
        (["--trials", "1", "--jobs", "0"], "--jobs must be >= 1"),
        (["--trials", "1", "--confidence-level", "1"], "--confidence-level: the confidence level"),
        (["--trials", "1", "model.nope=1"], "unknown config key"),
        (["--trials", "1", "model.device.filters=[]"], "no local exit to calibrate"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    argv = ["search", "--data", "synthetic-mvmc", "--out", str(out), *TINY, *extra]
    if "--data" in extra:
        argv = argv[:1] + argv[3:]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddnn: error: "), captured.err
    assert needle in lines[0]
    assert captured.out == "" and not out.exists()  # nothing started
