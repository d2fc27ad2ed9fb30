"""Model rollout: bundles checked against the manifest, the switch point, and a rollout in the
middle of a live deployment that loses no sample and mixes no models."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_deploy import needs_mosquitto

from ddnn.cli import main
from ddnn.config import resolve_config
from ddnn.data.registry import load_dataset
from ddnn.runtime.rollout import Announce, Versions, make_bundle, node_files, unpack_bundle
from ddnn.train.checkpoint import load_run, run_model_version
from ddnn.wire import model_tag


def announce_of(run: Path) -> Announce:
    digest = hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest()
    return Announce(run_model_version(run), digest)


# -- which model serves which sample -------------------------------------------------------------


def test_versions_switch_at_a_sample_and_settle():
    v = Versions(0x10001, "old")
    v.add(0x20002, "new")
    assert [v.version_for(s) for s in (0, 99)] == [0x10001, 0x10001]
    assert v.switch(100, 0x20002)
    assert (v.version_for(99), v.version_for(100), v.newest) == (0x10001, 0x20002, 0x20002)
    assert v.model_for(100) == "new" and v.by_tag(0x0002) == 0x20002
    assert not v.switch(200, 0x30003)  # not prepared: nothing changes
    v.settle(99)  # sample 99 still open
    assert v.version_for(99) == 0x10001
    v.settle(100)
    assert v.version_for(5) == 0x20002 and v.switches == []


def test_many_rollouts_keep_a_bounded_number_of_models_and_never_drop_the_new_one():
    v = Versions(1, "m1")
    for k, at in ((2, 10), (3, 20), (4, 30), (5, 40)):
        v.add(k, f"m{k}")
        assert k in v.models  # prepared: it must still be there when the switch comes
        assert v.switch(at, k)
        v.settle(at)  # the deployment passed the switch point
        assert len(v.models) <= 3 and v.version_for(at) == k and v.base == k
    unsettled = Versions(1, "m1")  # switch points not passed yet: every model is still needed
    for k, at in ((2, 10), (3, 20), (4, 30)):
        unsettled.add(k, f"m{k}")
        assert k in unsettled.models and unsettled.switch(at, k)
    assert [unsettled.version_for(s) for s in (9, 10, 20, 30)] == [1, 2, 3, 4]


def test_a_version_with_the_running_ones_frame_tag_is_refused():
    v = Versions(0x1234_0001, "old")
    with pytest.raises(ValueError, match="16-bit frame tag"):
        v.add(0x9999_0001, "new")  # low 16 bits equal: frames could not tell them apart


# -- bundles ----------------------------------------------------------------------------------------


def test_a_bundle_holds_what_the_node_loads_and_unpacks_checked(run_c, tmp_path):
    config = load_run(run_c)[1].model
    files = node_files(config, "device_3")
    assert files == ["manifest.json", "config.yaml", "sections/device_3.pt"]
    assert node_files(config, "aggregator")[2:] == ["sections/local.pt"]
    with pytest.raises(ValueError, match="keeps the hierarchy"):
        node_files(config, "device_6")
    bundle = make_bundle(run_c, files)
    out = unpack_bundle(bundle, announce_of(run_c), tmp_path / "ok")
    assert (out / "sections/device_3.pt").read_bytes() == (
        run_c / "sections/device_3.pt"
    ).read_bytes()


def test_a_c_engine_device_compiles_the_rolled_out_section_from_its_bundle(run_c, tmp_path):
    from ddnn.export.build import find_compiler
    from ddnn.runtime.engine import create_engine

    try:
        find_compiler()
    except Exception:  # noqa: BLE001 - no C compiler here: the C engine cannot be tested
        pytest.skip("no C compiler")
    config = load_run(run_c)[1].model
    bundle = make_bundle(run_c, node_files(config, "device_2"))
    folder = unpack_bundle(bundle, announce_of(run_c), tmp_path / "v")
    engine = create_engine("c", folder, 2)
    assert (folder / "c_build").is_dir()  # compiled next to the bundle, not in the run
    x = load_dataset(load_run(run_c)[1].data).test.x[:5, 2].numpy()
    torch_engine = create_engine("torch", run_c, 2)
    for got, want in zip(engine.infer_batch(x), torch_engine.infer_batch(x), strict=True):
        np.testing.assert_array_equal(got, want)


def _rezip(bundle: bytes, change) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(bundle))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in src.namelist():
            data = change(name, src.read(name))
            if data is not None:
                z.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda n, d: d[:-1] + bytes([d[-1] ^ 1]) if n.endswith(".pt") else d, "sha256 differs"),
        (lambda n, d: None if n == "manifest.json" else d, "no manifest.json"),
        (
            lambda n, d: d.replace(b'"size"', b'"size" ') if n == "manifest.json" else d,
            "not the one",
        ),
    ],
)
def test_a_tampered_bundle_is_refused(run_c, tmp_path, change, why):
    bundle = make_bundle(run_c, node_files(load_run(run_c)[1].model, "device_0"))
    with pytest.raises(ValueError, match=why):
        unpack_bundle(_rezip(bundle, change), announce_of(run_c), tmp_path / "x")


def test_a_bundle_with_an_extra_or_unsafe_file_is_refused(run_c, tmp_path):
    bundle = make_bundle(run_c, node_files(load_run(run_c)[1].model, "device_0"))
    extra = bundle
    buf = io.BytesIO(extra)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("sections/cloud.pt", b"listed, with other content")
    with pytest.raises(ValueError, match="sections/cloud.pt does not match the manifest"):
        unpack_bundle(buf.getvalue(), announce_of(run_c), tmp_path / "x")
    buf = io.BytesIO(extra)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("sections/extra.pt", b"not listed")
    with pytest.raises(ValueError, match="sections/extra.pt is not in the manifest"):
        unpack_bundle(buf.getvalue(), announce_of(run_c), tmp_path / "z")
    buf = io.BytesIO(extra)
    with zipfile.ZipFile(buf, "a") as z:
        z.writestr("../escape.pt", b"x")
    with pytest.raises(ValueError, match="unsafe path"):
        unpack_bundle(buf.getvalue(), announce_of(run_c), tmp_path / "y")
    assert not (tmp_path / "escape.pt").exists()


def test_a_bundle_of_another_run_is_refused(run_c, run_f, tmp_path):
    bundle = make_bundle(run_f, node_files(load_run(run_f)[1].model, "device_0"))
    with pytest.raises(ValueError, match="not the one announced"):
        unpack_bundle(bundle, announce_of(run_c), tmp_path / "x")


# -- a rollout mid-stream -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_c_retrained(run_c, tmp_path_factory) -> Path:
    """The same hierarchy and data as ``run_c``, trained for fewer epochs: other weights."""
    out = tmp_path_factory.mktemp("run-c2")
    args = ["train", "--data", "synthetic-mvmc", "--out", str(out), "--epochs", "5", "--seed", "2"]
    args += ["data.num_train=600", "data.num_test=96", "model.cloud.filters=[8]"]
    assert main(args) == 0
    return out


@needs_mosquitto
@pytest.mark.slow
def test_a_rollout_mid_stream_loses_nothing_and_mixes_no_models(
    run_c, run_c_retrained, capsys, tmp_path
):
    from ddnn.runtime.deploy import finish_local, run_local, start_local

    old, new = run_model_version(run_c), run_model_version(run_c_retrained)
    assert model_tag(old) != model_tag(new)
    codes: list[int] = []

    def roll_out(dep) -> None:
        def go() -> None:
            time.sleep(0.5)
            url = dep.broker.settings().url
            ns = dep.topics.namespace
            args = ["rollout", "--run", str(run_c_retrained), "--broker", url, "--namespace", ns]
            codes.append(main([*args, "--timeout", "60"]))
            # the restart path: a node started after the rollout finds the retained announce
            # and bundle, prepares the new model, and learns the switch point from progress
            dep.processes.kill("device_2")
            restarted.append(time.time())
            dep.processes.rejoin("device_2")

        threading.Thread(target=go, daemon=True).start()

    restarted: list[float] = []
    options = {"rate": 8.0, "window": 8, "deadline": 2.0, "upper_timeout": 10.0}
    dep = start_local(run_c, {**options, "thresholds": "local=0.5"}, workdir=tmp_path)
    try:
        run_local(dep, grace=2.0, timeout=120, during=roll_out)
    finally:
        report = finish_local(dep, 0.0)
    assert codes == [0], capsys.readouterr()
    assert len(report.answers) == dep.samples and not report.failed  # nothing lost
    versions = [report.answers[s].model_version for s in range(dep.samples)]
    switch = versions.index(new)  # one switch point: old before it, new from it on
    assert 0 < switch and set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
    # the restarted device took part again, with the new model (else its frames were refused)
    log_lines = (tmp_path / "device_2.log").read_text().strip().splitlines()
    assert json.loads(log_lines[-1])["counters"]["rollout_prepared"] == 1
    after = [a for a in report.answers.values() if a.captured > restarted[0] and 2 in a.present]
    assert after, "device 2 never rejoined after its restart"
    assert {a.model_version for a in after} == {new}
    # each side answered exactly as its own model does in-process on the same inputs, with the
    # devices the answer fused (device 2 was away while it restarted)
    config = resolve_config(overrides=["data.num_train=600", "data.num_test=96"])
    test = load_dataset(load_run(run_c)[1].data).test
    assert config.data.num_test == len(test)
    presence = torch.zeros(len(test), test.x.shape[1], dtype=torch.bool)
    for s, a in report.answers.items():
        presence[s, a.present] = True
    # A device killed while the cloud waited for its features: at its deadline the cloud answers
    # without them and flags the answer features_missing:cloud:[k], while the local exit had
    # fused that device's scores. In-process, that is the cloud exit with the device absent.
    cloud_presence = presence.clone()
    late = features_missing_at_cloud(report.answers)
    for s, devices in late.items():
        assert report.answers[s].exit == "cloud"
        cloud_presence[s, devices] = False
    for run, samples in ((run_c, range(switch)), (run_c_retrained, range(switch, dep.samples))):
        model = load_run(run)[0]
        result = model.infer(test.x, {"local": 0.5}, presence)
        want = result.predictions.clone()
        if late:
            cloud = model.wire_forward(test.x, cloud_presence).cloud_logits.argmax(1)
            for s in set(late) & set(samples):
                assert result.exit_names[int(result.exit_index[s])] == "cloud"
                want[s] = cloud[s]
        got = [report.answers[s].prediction for s in samples]
        np.testing.assert_array_equal(got, want.numpy()[list(samples)])


def features_missing_at_cloud(answers: dict) -> dict[int, list[int]]:
    """The devices whose features each cloud answer lacked, from its features_missing flag."""
    late = {}
    for s, a in answers.items():
        for flag in a.flags:
            if flag.startswith("features_missing:cloud:"):
                late[s] = [int(k) for k in json.loads(flag.split(":", 2)[2])]
    return late


@needs_mosquitto
@pytest.mark.slow
def test_a_run_of_another_hierarchy_is_refused_by_the_nodes_and_nothing_switches(
    run_c, run_f, capsys
):
    from ddnn.runtime.deploy import finish_local, start_local

    dep = start_local(run_c, {"rate": 12.0, "devices_per_process": 6})  # one device process
    try:
        url, ns = dep.broker.settings().url, dep.topics.namespace
        args = ["rollout", "--run", str(run_f), "--broker", url, "--namespace", ns]
        code = main([*args, "--timeout", "60"])
    finally:
        finish_local(dep, 0.0)
    err = capsys.readouterr().err
    assert code == 1
    assert "nothing was switched" in err and "aggregator: the new run's edge groups" in err


def test_a_bundle_with_a_damaged_member_is_refused_not_a_node_error(run_c, tmp_path):
    bundle = bytearray(make_bundle(run_c, node_files(load_run(run_c)[1].model, "device_0")))
    section = (run_c / "sections/device_0.pt").read_bytes()
    at = bytes(bundle).index(section[:64]) + 100  # a byte inside the stored section: CRC fails
    bundle[at] ^= 0xFF
    with pytest.raises(ValueError, match="damaged"):
        unpack_bundle(bytes(bundle), announce_of(run_c), tmp_path / "x")
