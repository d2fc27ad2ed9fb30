"""Bad flags, deployment files and run directories for serve / run-client / deploy.

Each must end the command with exit status 2 and exactly one stderr line ``ddnn: error: …`` that
names the bad value and what is accepted: no traceback, no usage block, and nothing started.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ddnn.cli import main
from ddnn.runtime.deploy import hierarchy_nodes, load_deployment, serve_command
from ddnn.runtime.options import OPTIONS

BROKER = ["--broker", "mqtt://127.0.0.1:1"]  # never reached: every case fails before connecting
RUN_C_NODES = ["cloud", "aggregator", *[f"device_{k}" for k in range(6)]]
PLACED = "nodes:\n" + "".join(f"  {n}: {{host: a}}\n" for n in RUN_C_NODES)


def one_error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Runs the CLI; asserts status 2 and a single ``ddnn: error:`` line; returns that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("ddnn: error: "), err
    return lines[0]


# -- flags -----------------------------------------------------------------------------------------

FLAG_CASES = [
    # (argv with {run} and {tmp}, substrings the line must hold: the bad value and what is accepted)
    (["deploy", "--run", "{run}", "--local", "--limit", "-1"], ["--limit", "'-1'", "integer >= 1"]),
    (["deploy", "--run", "{run}", "--local", "--limit", "0"], ["--limit", "'0'", "integer >= 1"]),
    (["run-client", "--run", "{run}", *BROKER, "--limit", "-1"], ["--limit", "'-1'", ">= 1"]),
    (["serve", "device", "--run", "{run}", "--id", "0", *BROKER, "--limit", "0"], ["'0'", ">= 1"]),
    (["deploy", "--run", "{run}", "--local", "--deadline", "nan"], ["--deadline", "'nan'", "> 0"]),
    (["serve", "cloud", "--run", "{run}", *BROKER, "--deadline", "nan"], ["'nan'", "finite"]),
    (["deploy", "--run", "{run}", "--local", "--rate", "nan"], ["--rate", "'nan'", ">= 0"]),
    (["deploy", "--run", "{run}", "--local", "--rate", "-1"], ["--rate", "'-1'", ">= 0"]),
    (["serve", "device", "--run", "{run}", "--id", "0", *BROKER, "--rate", "nan"], ["'nan'"]),
    (["deploy", "--run", "{run}", "--local", "--grace", "nan"], ["--grace", "'nan'", "> 0"]),
    (["run-client", "--run", "{run}", *BROKER, "--grace", "nan"], ["--grace", "'nan'", "> 0"]),
    (["deploy", "--run", "{run}", "--local", "--timeout", "-1"], ["--timeout", "'-1'", "> 0"]),
    (["run-client", "--run", "{run}", *BROKER, "--timeout", "-1"], ["--timeout", "'-1'", "> 0"]),
    (["deploy", "--run", "{run}", "--local", "--upper-timeout", "0"], ["--upper-timeout", "'0'"]),
    (["deploy", "--run", "{run}", "--local", "--batch", "0"], ["--batch", "'0'", "integer >= 1"]),
    (["deploy", "--run", "{run}", "--local", "--batch", "2.5"], ["--batch", "'2.5'", "integer"]),
    (["serve", "device", "--run", "{run}", "--id", "0", *BROKER, "--window", "0"], ["--window"]),
    (["serve", "cloud", "--run", "{run}", *BROKER, "--connect-timeout", "inf"], ["'inf'", "> 0"]),
    (["serve", "cloud", "--run", "{run}", *BROKER, "--qos", "2"], ["--qos", "'2'", "0, 1"]),
    (["deploy", "--run", "{run}", "--local", "--split", "dev"], ["'dev'", "test, train"]),
    (["deploy", "--run", "{run}", "--local", "--threshold", ""], ["''", "local=T,edge=T"]),
    (["serve", "aggregator", "--run", "{run}", *BROKER, "--thresholds", ""], ["''", "give T"]),
    (["deploy", "--run", "{run}", "--local", "--threshold", "nan"], ["'nan'", "[0, 1]"]),
    (["deploy", "--run", "{run}", "--local", "--threshold", "0.5,0.6"], ["'0.6'", "local=T"]),
    # run_c has no edge: an edge threshold would be ignored silently
    (
        ["deploy", "--run", "{run}", "--local", "--threshold", "edge=0.5"],
        ["'edge=0.5'", "no edges"],
    ),
    (
        ["deploy", "--run", "{run}", "--local", "--threshold", "local=0.5,edge=0.5"],
        ["'local=0.5,edge=0.5'", "no edges", "local=T"],
    ),
    (
        ["serve", "aggregator", "--run", "{run}", *BROKER, "--thresholds", "edge=0.5"],
        ["'edge=0.5'", "no edges"],
    ),
    (
        ["serve", "device", "--run", "{run}", "--id", "5-0", *BROKER],
        ["'5-0'", "empty", "K <= L"],
    ),
    (
        ["serve", "cloud", "--run", "{run}", "--broker", "mqtts://h", "--ca-file", "{tmp}/ca.pem"],
        ["--ca-file", "ca.pem'", "No such file", "readable file"],
    ),
    (
        ["run-client", "--run", "{run}", "--broker", "mqtts://h", "--cert-file", "{tmp}/c.pem"],
        ["--cert-file", "c.pem'", "readable file"],
    ),
    (
        ["serve", "cloud", "--run", "{run}", "--broker", "mqtts://h", "--key-file", "{tmp}"],
        ["--key-file", "Is a directory"],
    ),
    (["serve", "--run", "{run}"], ["required: role", "ddnn serve --help"]),
    (["serve", "cloud", "--run", "{run}", *BROKER, "--metrics-port", "0"], ["'0'", "1..65535"]),
    (["serve", "cloud", "--run", "{run}", *BROKER, "--metrics-port", "x"], ["'x'", "1..65535"]),
    (["deploy", "--run", "{run}", "--local", "--dashboard", "70000"], ["'70000'", "1..65535"]),
    (["deploy", "--run", "{run}", "--local", "--linger", "-1"], ["--linger", "'-1'", ">= 0"]),
]


def test_a_metrics_port_in_use_is_one_line_before_joining(run_c, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "aggregator", "--run", str(run_c), *BROKER, "--metrics-port", str(port)]
        line = one_error_line(capsys, argv)  # the broker (port 1) is never tried
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1" in line


def _case_id(argv: list[str]) -> str:
    return " ".join(repr(a) if not a else a for a in argv if a not in ("--run", "{run}", *BROKER))


@pytest.mark.parametrize("argv, expected", FLAG_CASES, ids=[_case_id(c[0]) for c in FLAG_CASES])
def test_bad_flag_is_one_line(argv, expected, run_c, tmp_path, capsys):
    argv = [a.replace("{run}", str(run_c)).replace("{tmp}", str(tmp_path)) for a in argv]
    line = one_error_line(capsys, argv)
    for text in expected:
        assert text in line


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["deploy", "--help"])
    assert stop.value.code == 0 and "--threshold" in capsys.readouterr().out


# -- deployment files ------------------------------------------------------------------------------

DEPLOYMENT_CASES = [
    # (file text, substrings of the one line)
    (f"options: [1, 2]\n{PLACED}", ["options is [1, 2]", "not a mapping", "rate, batch"]),
    (f"options: 5\n{PLACED}", ["options is 5", "not a mapping", "accepted keys: rate"]),
    (f"options: {{speed: 3}}\n{PLACED}", ["['speed']", "accepted: rate, batch, window"]),
    (f"options: {{rate: .nan}}\n{PLACED}", ["options.rate", "nan", "finite number >= 0"]),
    (f"options: {{deadline: -1}}\n{PLACED}", ["options.deadline", "-1", "> 0"]),
    (f"options: {{batch: 0}}\n{PLACED}", ["options.batch", "0", "integer >= 1"]),
    (f"options: {{limit: 2.5}}\n{PLACED}", ["options.limit", "2.5", "integer >= 1"]),
    (f"options: {{engine: gpu}}\n{PLACED}", ["options.engine", "'gpu'", "torch, c"]),
    (f"options: {{qos: 2}}\n{PLACED}", ["options.qos", "2", "0, 1"]),
    (f"options: {{wait_for_start: 'yes'}}\n{PLACED}", ["options.wait_for_start", "'yes'", "true"]),
    (f"options: {{thresholds: ''}}\n{PLACED}", ["options.thresholds", "''", "local=T,edge=T"]),
    (f"options: {{thresholds: edge=0.5}}\n{PLACED}", ["options.thresholds", "no edges"]),
    (f"options: {{ca_file: /no/ca.pem}}\n{PLACED}", ["options.ca_file", "'/no/ca.pem'"]),
    # device_3 has no host (line 7)
    (PLACED.replace("device_3: {host: a}", "device_3: {input: x.npy}"), ["'device_3'", "no host"]),
    (PLACED.replace("device_3: {host: a}", "device_3:"), ["'device_3'", "host: NAME"]),
    (PLACED.replace("device_3: {host: a}", "device_3: {host: ''}"), ["'device_3'", "no host"]),
    # device_5 placed twice: lines 9 and 10 (line 1 is "nodes:")
    (PLACED + "  device_5: {host: b}\n", ["'device_5'", "twice", "lines 9 and 10"]),
    # the flow mapping of line 2 is not closed; YAML notices at the ':' of line 3, column 13
    (
        "nodes:\n  cloud: {host: a\n  aggregator: {host: a}\n",
        ["is not valid YAML", "expected ',' or '}'", "line 3, column 13"],
    ),
]


@pytest.mark.parametrize("text, expected", DEPLOYMENT_CASES)
def test_bad_deployment_file_is_one_line(text, expected, run_c, tmp_path, capsys):
    path = tmp_path / "deployment.yaml"
    path.write_text(text)
    argv = ["deploy", "--run", str(run_c), "--file", str(path), "--host", "a"]
    line = one_error_line(capsys, argv)
    assert "deployment.yaml" in line
    for want in expected:
        assert want in line


def test_every_deployment_option_reaches_a_serve_command(run_c, tmp_path):
    import yaml

    from ddnn.runtime.deploy import read_run_config

    assert set(OPTIONS) == {
        "rate", "batch", "window", "engine", "split", "limit", "deadline", "upper_timeout",
        "thresholds", "ca_file", "qos", "wait_for_start",
    }  # fmt: skip
    values = {
        "rate": 5, "batch": 4, "window": 8, "engine": "c", "split": "train", "limit": 10,
        "deadline": 1.5, "upper_timeout": 2, "thresholds": 0.25, "ca_file": __file__, "qos": 0,
        "wait_for_start": True,
    }  # fmt: skip
    path = tmp_path / "all-options.yaml"
    path.write_text(yaml.safe_dump({"options": values}) + PLACED)
    mc = read_run_config(run_c).model
    dep = load_deployment(path, mc)
    commands = [
        " ".join(serve_command(n, run_c, dep.broker, dep.namespace, dep.options))
        for n in hierarchy_nodes(mc)
    ]
    device, aggregator = commands[RUN_C_NODES.index("device_0")], commands[1]
    for flag in ("--rate 5", "--batch 4", "--window 8", "--engine c", "--split train"):
        assert flag in device
    assert "--limit 10" in device and "--qos 0" in device and device.endswith("--wait-for-start")
    assert "--deadline 1.5 --upper-timeout 2 --thresholds 0.25" in aggregator
    assert all(f"--ca-file {__file__}" in c for c in commands)


# -- damaged run directories -----------------------------------------------------------------------


def _other_runs_section(run_c: Path, tmp_path: Path, name: str) -> Path:
    """``name`` of another run with the same hierarchy (fresh weights)."""
    import torch

    from ddnn.models.ddnn import DDNN
    from ddnn.train.checkpoint import load_run, save_run

    _, config, _ = load_run(run_c)
    torch.manual_seed(123)
    other = save_run(tmp_path / "other", DDNN(config.model), config)
    return other / "sections" / name


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


RUN_CASES = {
    # name: (how the copy is damaged, substrings of the one line)
    "config-list": (lambda r: (r / "config.yaml").write_text("- 1\n- 2\n"), ["is a list"]),
    "config-empty": (lambda r: (r / "config.yaml").write_text(""), ["config.yaml' is empty"]),
    "config-yaml-error": (
        lambda r: (r / "config.yaml").write_text("model:\n  num_devices: [6\n"),
        ["config.yaml' is not valid YAML", "at line 3, column 1"],
    ),
    "config-duplicate-key": (
        lambda r: (r / "config.yaml").write_text("eval: {}\neval: {}\n"),
        ["key 'eval' is given twice (lines 1 and 2)"],
    ),
    "checkpoint-cut-in-half": (
        lambda r: _truncate(r / "checkpoint.pt"),
        ["checkpoint.pt does not match the manifest", "bytes where it says"],
    ),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_damaged_run_is_one_line(case, run_c, tmp_path, capsys):
    damage, expected = RUN_CASES[case]
    run = Path(shutil.copytree(run_c, tmp_path / "run"))
    damage(run)
    line = one_error_line(capsys, ["deploy", "--run", str(run), "--local"])
    for want in expected:
        assert want in line


def test_section_from_another_run_is_named(run_c, tmp_path, capsys):
    run = Path(shutil.copytree(run_c, tmp_path / "run"))
    shutil.copy(_other_runs_section(run_c, tmp_path, "device_2.pt"), run / "sections")
    for argv in (
        ["deploy", "--run", str(run), "--local"],
        ["serve", "device", "--run", str(run), "--id", "0", *BROKER],
        ["run-client", "--run", str(run), *BROKER],
    ):
        line = one_error_line(capsys, argv)
        assert "sections/device_2.pt does not match the manifest (sha256 differs)" in line
