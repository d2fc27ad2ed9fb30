"""The `ddnn` command line end to end, and every bad input exiting 2 with a one-line message."""

import json
import subprocess
import sys

import pytest

from ddnn.cli import main

TINY = ["data.num_train=48", "data.num_test=24", "model.cloud.filters=[4]"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic-mvmc",
                "--out",
                str(out),
                "--epochs",
                "2",
                "--seed",
                "1",
                *TINY,
            ]
        )
        == 0
    )
    return out


def test_train_writes_a_loadable_run(run_dir):
    assert (run_dir / "checkpoint.pt").is_file()
    assert (run_dir / "config.yaml").read_text().count("num_train: 48") == 1
    assert sorted(p.name for p in (run_dir / "sections").iterdir()) == [
        "cloud.pt",
        *(f"device_{i}.pt" for i in range(6)),
        "local.pt",
    ]


def test_evaluate_json_rows(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--thresholds", "0,0.5,1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["threshold"] for r in rows] == [0.0, 0.5, 1.0]
    required = {
        "threshold",
        "local_exit_fraction",
        "local_accuracy",
        "cloud_accuracy",
        "overall_accuracy",
        "bytes_per_device",
        "bytes_per_device_formula",
        "raw_bytes_per_device",
    }
    for r in rows:
        assert required <= set(r)
        assert 0 <= r["local_exit_fraction"] <= 1 and 0 <= r["overall_accuracy"] <= 1
        assert r["raw_bytes_per_device"] == 3072
        assert r["bytes_per_device"] == pytest.approx(r["bytes_per_device_formula"])
    assert rows[0]["local_exit_fraction"] == 0 and rows[0]["bytes_per_device"] == 140
    assert rows[-1]["local_exit_fraction"] == 1 and rows[-1]["bytes_per_device"] == 12
    assert rows[0]["overall_accuracy"] == rows[0]["cloud_accuracy"]
    assert rows[-1]["overall_accuracy"] == rows[-1]["local_accuracy"]


def test_evaluate_table_and_missing(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--missing", "0,3"]) == 0
    out = capsys.readouterr().out
    assert "overall acc %" in out and "best overall accuracy" not in out  # chosen on test
    assert "at the paper's T = 0.80: overall accuracy" in out and "ddnn calibrate" in out


def test_profile(run_dir, capsys):
    assert main(["profile", str(run_dir), "--json"]) == 0
    sections = {s["name"]: s for s in json.loads(capsys.readouterr().out)["sections"]}
    # device: 3x3x3x4 conv bits (14 B) + 4 BN thresholds (16 B + 1 B of sign bits)
    # + 1024x3 FC bits (384 B) + 3 head BN scale/shift pairs (24 B)
    assert sections["device_0"]["memory_bytes"] == 14 + 17 + 384 + 24


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--data", "imagenet", "--out", "{tmp}/x"],
            "unknown data set 'imagenet'; accepted: breast-cancer-3, digits-4, digits-rows-4, "
            "fashion-mnist-6, folder, mvmc, npz, synthetic-mvmc, synthetic-series, synthetic-vectors",
        ),
        (
            ["train", "--out", "{tmp}/x", "model.local_aggregation=sum"],
            "unknown aggregator 'sum'; accepted",
        ),
        (
            ["train", "--out", "{tmp}/x", "model.num_devices=4"],
            "model.num_devices = 4 but data set",
        ),
        (["train", "--out", "{tmp}/x", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (
            ["train", "--out", "{tmp}/x", "train.device_dropout_mode=pairs"],
            "train.device_dropout_mode must be one of independent, single, got 'pairs'",
        ),
        (["train", "--out", "{tmp}/x", "--config", "{tmp}/none.yaml"], "does not exist"),
        (["evaluate", "{run}", "--missing", "9"], "out of range; accepted: 0..5"),
        (["evaluate", "{run}", "--missing", "a"], "not a comma-separated list"),
        (["evaluate", "{run}", "--thresholds", "0.5,1.2"], "outside [0, 1]"),
        (["evaluate", "{run}", "--thresholds", "low"], "is not a number"),
        (["evaluate", "{tmp}/no-run"], "does not exist"),
        (["evaluate", "{tmp}"], "not found"),
        (["profile", "{tmp}/no-run"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, run_dir, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ddnn: error:") and message in last
    assert "Traceback" not in err


def test_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00garbage")
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run(
        [sys.executable, "-m", "ddnn.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "demo" in result.stdout


@pytest.fixture
def two_class_npz(tmp_path):
    """6 devices of 3x4x4 images, 2 classes: the data's class count differs from the default 3."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((40, 6, 3, 4, 4)).astype(np.float32)
    path = tmp_path / "two.npz"
    np.savez(path, X=x, y=np.arange(40) % 2)
    return path


def test_a_given_value_equal_to_the_default_that_the_data_contradicts_exits_2(
    two_class_npz, tmp_path, capsys
):
    """model.num_classes=3 is the default; given for 2-class data it is one line and exit 2
    (train, from a flag or a YAML file, and experiment), and nothing is trained or written."""
    data = ["--data", "npz", "--data-path", str(two_class_npz)]
    expected = (
        "ddnn: error: model.num_classes = 3 but data set 'npz' has 2; "
        "give 2 or leave model.num_classes out to take the data's"
    )
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model:\n  num_classes: 3\n")
    report = tmp_path / "report"
    for argv in (
        ["train", *data, "--out", str(tmp_path / "a"), "model.num_classes=3"],
        ["train", *data, "--out", str(tmp_path / "b"), "--config", str(yaml_file)],
        [
            "experiment",
            "threshold",
            *data,
            "--quick",
            "--jobs",
            "1",
            "--out",
            str(report),
            "model.num_classes=3",
        ],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [expected], argv
    assert not (tmp_path / "a" / "checkpoint.pt").exists()
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    assert not report.exists()


def test_a_value_left_out_is_taken_from_the_data(two_class_npz, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", "npz", "--data-path", str(two_class_npz), "--out", str(out)]
    assert main([*argv, "--epochs", "1"]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["model"]["num_classes"] == 2 and saved["model"]["num_devices"] == 6
    assert saved["model"]["input_shape"] == [3, 4, 4]
