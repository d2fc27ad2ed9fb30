"""The distributed runtime end to end: real mosquitto, every node a separate OS process.

Each test checks answers against ``model.infer`` on the same data (an independent in-process
path), or against invariants: every sample answered or failed, bytes = formula + headers.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from ddnn.data.registry import load_dataset
from ddnn.models.sections import device_feature_shape
from ddnn.runtime.deploy import finish_local, run_local, start_local
from ddnn.runtime.mqtt import close_client, connect_client
from ddnn.train.checkpoint import load_run, run_model_version
from ddnn.wire import encode_scores_frame

needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed (apt-get install mosquitto; .ci/run installs it)",
)
pytestmark = [needs_mosquitto, pytest.mark.slow]

SLOW_OPTIONS = {"deadline": 2.0, "upper_timeout": 10.0}


def reference(run_dir, thresholds):
    """``model.infer`` on the run's test split: (predictions, exit names, model, labels)."""
    model, config, _ = load_run(run_dir)
    test = load_dataset(config.data).test
    result = model.infer(test.x, thresholds)
    exits = [result.exit_names[i] for i in result.exit_index.tolist()]
    return result.predictions.numpy(), exits, model, test.labels.numpy()


# The six devices in one process (as ``ddnn serve device --id 0-5`` runs them): five fewer
# interpreters to start (about 2 s of CPU each, for torch) where a test kills no device alone.
ONE_DEVICE_PROCESS = {"devices_per_process": 6}


def deploy(run_dir, options, **kw):
    """A local deployment (its devices in one process) run to the end."""
    grouped = {} if kw.get("source") else ONE_DEVICE_PROCESS  # live sources: a process each
    dep = start_local(run_dir, {**grouped, **options}, **kw)
    try:
        wall = run_local(dep, grace=2.0, timeout=120.0)
    finally:
        report = finish_local(dep, 0.0)
    return report, wall


def check_bytes(report, model):
    """Per device per sample: |C| scores in the run's encoding, + the packed map when the sample
    went up; the sample's share of the frame headers is at most one whole header of each frame
    (scores: 1 + sender 1 + first <= 2 + count 1 + model tag 2 + time 3 = 10 B here; features
    7 B) and more than zero."""
    c = model.config.num_classes
    score_bytes = {"float32": 4, "float16": 2, "int8": 1}[model.config.wire.scores] * c
    feature_bytes = [
        math.ceil(math.prod(device_feature_shape(s, model.config.device)) / 8)
        for s in model.config.device_shapes
    ]
    for answer in report.answers.values():
        for key, payload in answer.device_payload.items():
            up = answer.exit != "local"
            assert payload == score_bytes + (feature_bytes[int(key)] if up else 0), answer
            assert 0 < answer.device_header[key] <= 10 + (7 if up else 0)
            assert answer.device_mqtt[key] > 0


def test_distributed_answers_equal_model_infer_config_c(run_c):
    thresholds = {"local": 0.5}
    preds, exits, model, labels = reference(run_c, thresholds)
    report, _ = deploy(run_c, {**SLOW_OPTIONS, "thresholds": "local=0.5"})
    assert report.failed == {}
    assert len(report.answers) == len(labels)
    assert report.exits() == exits
    np.testing.assert_array_equal(report.predictions(), preds)
    assert all(not a.flags for a in report.answers.values())
    assert {"local", "cloud"} <= set(exits), "choose a threshold that exercises both exits"
    check_bytes(report, model)
    doc = report.as_dict()
    assert 0 < doc["header_bytes_per_device"] < 17
    assert doc["control_bytes_per_device"] > 0
    parts = ("bytes_per_device", "header_bytes_per_device", "mqtt_overhead_per_device")
    wire = sum(doc[k] for k in parts) + doc["control_bytes_per_device"]
    assert doc["wire_bytes_per_device"] == pytest.approx(wire)
    local = exits.count("local") / len(exits)
    assert doc["local_exit_fraction"] == pytest.approx(local)
    assert doc["overall_accuracy"] == pytest.approx(float((preds == labels).mean()))


def splitting_thresholds(run_dir):
    """Local and edge thresholds that send about a third of the samples to each exit, halfway
    between two samples' entropies (so no sample sits on a threshold)."""
    import torch

    from ddnn.nn.functional import entropy_from_logits

    model, config, _ = load_run(run_dir)
    with torch.no_grad():
        out = model.wire_forward(load_dataset(config.data).test.x)  # the deployed path
    local = np.sort(entropy_from_logits(out.local_logits).numpy())
    t_local = float(local[len(local) // 3 : len(local) // 3 + 2].mean())
    up = entropy_from_logits(out.edge_logits).numpy()[
        entropy_from_logits(out.local_logits).numpy() >= t_local
    ]
    edge = np.sort(up)
    t_edge = float(edge[len(edge) // 2 : len(edge) // 2 + 2].mean())
    return {"local": t_local, "edge": t_edge}


def test_distributed_answers_equal_model_infer_config_f_with_edges(run_f):
    thresholds = splitting_thresholds(run_f)
    preds, exits, model, _ = reference(run_f, thresholds)
    text = f"local={thresholds['local']!r},edge={thresholds['edge']!r}"
    report, _ = deploy(run_f, {**SLOW_OPTIONS, "thresholds": text})
    assert report.failed == {}
    assert report.exits() == exits
    np.testing.assert_array_equal(report.predictions(), preds)
    assert {"local", "edge", "cloud"} <= set(exits)
    check_bytes(report, model)
    edge_bits = math.prod(model.edges[0].feature_shape)
    for a in report.answers.values():
        if a.exit == "cloud":
            assert all(v == math.ceil(edge_bits / 8) for v in a.edge_payload.values())
            assert a.edge_payload
        else:
            assert not a.edge_payload


def test_killed_devices_lose_no_sample(run_c):
    def kill_two(dep):
        time.sleep(0.5)
        dep.processes.kill("device_0")
        time.sleep(0.3)
        dep.processes.kill("device_3")

    dep = start_local(run_c, {"rate": 60.0, "deadline": 0.3, "thresholds": "0.5"})
    try:
        run_local(dep, grace=2.0, timeout=60, during=kill_two)
    finally:
        report = finish_local(dep, 0.0)
    assert len(report.answers) + len(report.failed) == dep.samples
    assert len(report.answers) == dep.samples, report.failed
    late = [a for a in report.answers.values() if a.sample > 0.9 * dep.samples]
    assert late and all(0 not in a.present and 3 not in a.present for a in late)
    early = [a for a in report.answers.values() if a.sample < 10]
    assert sum(len(a.present) == 6 for a in early) >= 8, "before the kill, all devices took part"
    assert report.as_dict()["overall_accuracy"] > 0.5


def test_broker_restart_mid_run(run_c):
    def restart_broker(dep):
        time.sleep(0.8)
        dep.broker.restart()

    dep = start_local(
        run_c, {**ONE_DEVICE_PROCESS, "rate": 40.0, "deadline": 0.5, "thresholds": "0.5"}
    )
    try:
        run_local(dep, grace=4.0, timeout=90, during=restart_broker)
    finally:
        report = finish_local(dep, 0.0)
    assert len(report.answers) + len(report.failed) == dep.samples
    # Nodes reconnected and the replay went on: the last samples were answered after the restart.
    assert max(report.answers) == dep.samples - 1
    assert len(report.answers) >= 0.8 * dep.samples


def test_cloud_down_answers_locally_and_flags(run_c):
    dep = start_local(run_c, {**ONE_DEVICE_PROCESS, "deadline": 1.0, "thresholds": "0.3"})
    try:
        dep.processes.kill("cloud")
        time.sleep(0.3)  # the broker publishes the cloud's Last Will
        run_local(dep, grace=2.0, timeout=60)
    finally:
        report = finish_local(dep, 0.0)
    assert report.failed == {}
    assert all(a.exit == "local" for a in report.answers.values())
    flagged = [a for a in report.answers.values() if "cloud_unreachable" in a.flags]
    assert flagged, "with T = 0.3 some samples must have wanted the cloud"


def test_garbage_frames_are_counted_not_fatal(run_c, tmp_path):
    preds, exits, _, _ = reference(run_c, {"local": 0.5})
    dep = start_local(run_c, {**SLOW_OPTIONS, "thresholds": "0.5"}, workdir=tmp_path)
    try:
        client = connect_client("intruder", dep.broker.settings(), lambda m: None, [])
        topics = dep.topics
        version = run_model_version(run_c)
        client.publish(topics.device_scores(0), b"\x00garbage", qos=1).wait_for_publish(5)

        def frame(sender, model):
            return encode_scores_frame(
                np.zeros((1, 3)),
                sender=sender,
                first_sample=5,
                model_version=model,
                encoding="float32",
                captured=time.time(),
            )

        client.publish(topics.device_scores(0), frame(0, version ^ 1), qos=1).wait_for_publish(5)
        client.publish(topics.device_scores(0), frame(40, version), qos=1).wait_for_publish(5)
        client.publish(topics.up, b"{not json", qos=1).wait_for_publish(5)
        client.publish(topics.device_features(1), b"DN\x01", qos=1).wait_for_publish(5)
        close_client(client)
        run_local(dep, grace=2.0, timeout=60)
    finally:
        report = finish_local(dep, 0.0)
    assert report.exits() == exits
    np.testing.assert_array_equal(report.predictions(), preds)
    aggregator = (tmp_path / "aggregator.log").read_text()
    counters = json.loads(aggregator.strip().splitlines()[-1])["counters"]
    assert counters["rejected_version"] == 1  # b"\x00garbage": no v2 frame starts with 0x00
    assert counters["rejected_wrong_model"] == 1
    assert counters["rejected_sender"] == 1
    cloud = json.loads((tmp_path / "cloud.log").read_text().strip().splitlines()[-1])["counters"]
    assert cloud["rejected_version_1"] == 1  # b"DN\x01": an old v1 frame, named as such
    assert cloud["rejected_malformed"] == 1


def test_a_device_that_comes_back_rejoins(run_c):
    def kill_and_restart(dep):
        time.sleep(0.4)
        dep.processes.kill("device_2")
        time.sleep(0.5)
        dep.processes.rejoin("device_2")

    dep = start_local(run_c, {"rate": 12.0, "deadline": 0.3, "thresholds": "0.5"})
    try:
        run_local(dep, grace=2.0, timeout=60, during=kill_and_restart)  # 96 samples at 12/s
    finally:
        report = finish_local(dep, 0.0)
    assert len(report.answers) == dep.samples, report.failed
    with_2 = [a.sample for a in report.answers.values() if 2 in a.present]
    without_2 = [a.sample for a in report.answers.values() if 2 not in a.present]
    assert without_2, "samples during the outage were fused without device 2"
    # After it rejoined, device 2 took part again, and it did not replay from the start.
    assert max(with_2) > max(without_2)
    assert min(without_2) > 0


def test_cli_deploy_local_json_report(run_c, capsys):
    import socket

    from ddnn.cli import main
    from ddnn.runtime.broker import free_port

    port = free_port()  # with the dashboard: it is served during the run and gone after it
    argv = ["deploy", "--run", str(run_c), "--local", "--limit", "30", "--json"]
    argv += ["--threshold", "0.5", "--deadline", "2", "--dashboard", str(port)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"ddnn deploy: dashboard on http://127.0.0.1:{port}/" in captured.err
    with socket.socket() as again:  # the gateway let its port go
        again.bind(("127.0.0.1", port))
    doc = json.loads(captured.out)
    for key in (
        "samples",
        "answered",
        "failed",
        "overall_accuracy",
        "local_exit_fraction",
        "bytes_per_device",
        "latency_ms",
        "mqtt_overhead_per_device",
        "wire_bytes_per_device",
        "cpu_ms_per_device_sample",
    ):
        assert key in doc
    assert doc["samples"] == 30 and doc["answered"] == 30 and doc["failed"] == 0
    assert doc["latency_ms_all"]["p50"] > 0
    assert doc["cpu_ms_per_device_sample"] > 0 and doc["node_exits"] == {}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="the C engine needs gcc")
def test_c_engine_devices_give_the_same_answers_without_torch(run_c, tmp_path):
    preds, exits, _, _ = reference(run_c, {"local": 0.5})
    dep = start_local(run_c, {**SLOW_OPTIONS, "thresholds": "0.5", "engine": "c"}, workdir=tmp_path)
    try:
        run_local(dep, grace=2.0, timeout=120.0)
    finally:
        report = finish_local(dep, 0.0)
    assert report.failed == {}
    assert report.exits() == exits
    np.testing.assert_array_equal(report.predictions(), preds)
    for k in range(6):
        last = (tmp_path / f"device_{k}.log").read_text().strip().splitlines()[-1]
        assert json.loads(last)["torch"] is False, "a C-engine device must not load torch"


@pytest.mark.parametrize(
    "hierarchy, encoding, engine",
    [("c", "int8", "c"), ("c", "float16", "torch"), ("f", "int8", "torch")],
)
def test_deploy_equals_evaluate_for_every_score_encoding(
    hierarchy, encoding, engine, tmp_path_factory
):
    if engine == "c" and shutil.which("gcc") is None:
        pytest.skip("the C engine needs gcc")
    from conftest import train_tiny

    extra = ["model.edge.groups=[[0,1],[2,3],[4,5]]", "model.edge.filters=[8]"]
    run = train_tiny(
        tmp_path_factory.mktemp(f"run-{hierarchy}-{encoding}"),
        f"model.wire.scores={encoding}",
        *(extra if hierarchy == "f" else []),
    )
    thresholds = splitting_thresholds(run) if hierarchy == "f" else {"local": 0.5}
    preds, exits, model, _ = reference(run, thresholds)  # model.infer applies the encoding
    text = ",".join(f"{k}={v!r}" for k, v in thresholds.items())
    report, _ = deploy(run, {**SLOW_OPTIONS, "thresholds": text, "engine": engine})
    assert report.failed == {}
    assert report.exits() == exits
    np.testing.assert_array_equal(report.predictions(), preds)
    check_bytes(report, model)  # |C| x 1 B (int8) or 2 B (float16) of scores per device


def test_deployment_file_and_run_client(run_c, tmp_path, capsys):
    """The multi-machine path on one machine: `deploy --file --host` starts that host's nodes
    (here: all), `run-client` starts the replay, collects, reports and stops them."""
    import subprocess
    import sys

    from ddnn.cli import main
    from ddnn.runtime.broker import LocalBroker

    with LocalBroker("filetest") as broker:
        nodes = ["cloud", "aggregator", *[f"device_{k}" for k in range(6)]]
        spec = "\n".join(f"  {n}: {{host: here}}" for n in nodes)
        deployment = tmp_path / "deploy.yaml"
        deployment.write_text(
            f"broker: {broker.url}\nnamespace: filetest\n"
            f"options: {{wait_for_start: true, limit: 40, deadline: 2.0}}\nnodes:\n{spec}\n"
        )
        host = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ddnn.cli",
                "deploy",
                "--run",
                str(run_c),
                "--file",
                str(deployment),
                "--host",
                "here",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            from ddnn.runtime.client import ResultCollector
            from ddnn.runtime.protocol import Topics

            watcher = ResultCollector(broker.settings(), Topics("filetest"), "watcher")
            watcher.wait_online(nodes, 60.0)
            watcher.close(stop_nodes=False)
            code = main(
                [
                    "run-client",
                    "--run",
                    str(run_c),
                    "--broker",
                    broker.url,
                    "--namespace",
                    "filetest",
                    "--limit",
                    "40",
                    "--start",
                    "--stop",
                    "--json",
                ]
            )
            assert code == 0
            doc = json.loads(capsys.readouterr().out)
            assert host.wait(30) == 0, host.stderr.read() if host.stderr else ""
        finally:
            if host.poll() is None:
                host.kill()
                host.wait()
            if host.stderr:
                host.stderr.close()
    assert doc["samples"] == 40 and doc["answered"] == 40 and doc["failed"] == 0
