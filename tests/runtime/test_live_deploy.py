"""Live sources end to end: real mosquitto, every node a process, devices reading folders.

The files ``ddnn samples`` writes, read back by live devices, must give exactly the answers
``model.infer`` gives on the same samples (the PNGs hold the 8-bit inputs exactly).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
from test_deploy import SLOW_OPTIONS, deploy, needs_mosquitto, reference

from ddnn.runtime.deploy import finish_local, run_local, start_local
from ddnn.runtime.samples import write_samples

pytestmark = [needs_mosquitto, pytest.mark.slow]


def test_folder_sources_give_the_answers_of_model_infer(run_c, tmp_path):
    n = 24
    write_samples(run_c, tmp_path / "live", "test", n, "png")
    # one device's folder lacks sample 5: that sample is fused without it, flagged
    (tmp_path / "live" / "device_3" / "5.png").unlink()
    thresholds = {"local": 0.5}
    preds, exits, _, labels = reference(run_c, thresholds)
    report, _ = deploy(
        run_c, {**SLOW_OPTIONS, "thresholds": "local=0.5"}, source=f"folder:{tmp_path / 'live'}"
    )
    assert report.failed == {} and sorted(report.answers) == list(range(n))
    full = [s for s in range(n) if s != 5]
    got = report.answers
    assert [got[s].prediction for s in full] == preds[full].tolist()
    assert [got[s].exit for s in full] == [exits[s] for s in full]
    assert got[5].missing == [3] and any("devices_missing" in f for f in got[5].flags)
    doc = report.as_dict()
    assert doc["overall_accuracy"] == pytest.approx(
        float(np.mean([got[s].prediction == labels[s] for s in range(n)]))
    )


def test_samples_refuses_png_for_inputs_that_are_not_images(run_c, tmp_path):
    # the tiny run's inputs are 8-bit images: npy always works, and holds them exactly
    write_samples(run_c, tmp_path / "npy", "test", 3, "npy")
    x = np.load(tmp_path / "npy" / "device_0" / "2.npy")
    assert x.dtype == np.float32 and np.allclose(x * 255, np.rint(x * 255), atol=1e-4)
    with pytest.raises(ValueError, match="format"):
        write_samples(run_c, tmp_path / "bad", "test", 3, "gif")


def fifo_deployment(run_c, tmp_path, samples: int, **kw):
    """A local deployment whose device K reads the FIFO ``tmp_path/camK.fifo`` (made here)."""
    for k in range(6):
        os.mkfifo(tmp_path / f"cam{k}.fifo")
    return start_local(
        run_c,
        {**SLOW_OPTIONS, "thresholds": "local=0.5"},
        limit=samples,
        source=f"pipe:{tmp_path}/cam{{id}}.fifo",
        **kw,
    )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_ffmpeg_testsrc_through_pipes_is_answered_end_to_end(run_c, tmp_path):
    """Six FIFOs fed by ffmpeg's test pattern (a real video pipeline, no camera): every frame
    is one capture, numbered in order on every device, so sample k fuses frame k of each."""
    frames = 12
    dep = fifo_deployment(run_c, tmp_path, frames)
    feeders = []
    try:
        for k in range(6):
            cmd = ["ffmpeg", "-loglevel", "error", "-f", "lavfi"]
            cmd += ["-i", f"testsrc=size=32x32:rate=25:duration=10,hue=h={60 * k}"]
            cmd += ["-frames:v", str(frames), "-pix_fmt", "rgb24", "-f", "rawvideo", "-y"]
            feeders.append(subprocess.Popen([*cmd, str(tmp_path / f"cam{k}.fifo")]))
        run_local(dep, grace=3.0, timeout=120.0)
    finally:
        report = finish_local(dep, 0.0)
        for f in feeders:
            f.wait(timeout=30)
    assert [f.returncode for f in feeders] == [0] * 6
    assert report.failed == {} and sorted(report.answers) == list(range(frames))
    assert all(a.present == list(range(6)) and not a.flags for a in report.answers.values())


def test_the_trigger_fuses_the_latest_frame_of_every_device_per_tick(run_c, tmp_path):
    """Cameras on their own clocks (FIFOs fed continuously at 40 frames/s): on each of 8 ticks
    every device takes its latest frame, so each sample fuses all six, numbered by the tick."""
    ticks = 8
    dep = fifo_deployment(run_c, tmp_path, ticks, trigger_rate=5.0)
    stop = threading.Event()

    def camera(k: int) -> None:
        frame = bytes([(17 * k + i) % 256 for i in range(32 * 32 * 3)])
        with open(tmp_path / f"cam{k}.fifo", "wb") as fifo:
            while not stop.is_set():
                fifo.write(frame)
                fifo.flush()
                stop.wait(0.025)

    cameras = [threading.Thread(target=camera, args=(k,), daemon=True) for k in range(6)]
    try:
        for c in cameras:
            c.start()
        run_local(dep, grace=3.0, timeout=120.0)
    finally:
        stop.set()
        report = finish_local(dep, 0.0)
        for c in cameras:
            c.join(timeout=10)
    assert report.failed == {} and sorted(report.answers) == list(range(ticks))
    assert all(a.present == list(range(6)) and not a.flags for a in report.answers.values())


def test_a_device_whose_folder_stays_empty_is_reported_missing(run_c, tmp_path):
    n = 6
    write_samples(run_c, tmp_path / "live", "test", n, "png")
    for f in (tmp_path / "live" / "device_4").iterdir():
        f.unlink()  # camera 4 delivers nothing
    report, _ = deploy(
        run_c, {**SLOW_OPTIONS, "thresholds": "local=0.5"}, source=f"folder:{tmp_path / 'live'}"
    )
    assert report.failed == {} and sorted(report.answers) == list(range(n))
    for a in report.answers.values():
        assert a.present == [0, 1, 2, 3, 5] and a.missing == [4]
        assert any(f.startswith("devices_missing:[4]") for f in a.flags)


def test_mqtt_sensor_topics_feed_the_devices(run_c, tmp_path):
    """Sensors that already publish on the broker: raw rgb24 frames of the test images on
    sensors/camK, in order; sample i fuses every camera's i-th reading."""
    from ddnn.data.registry import load_dataset
    from ddnn.runtime.mqtt import close_client, connect_client
    from ddnn.runtime.samples import image_pixels
    from ddnn.train.checkpoint import load_run

    n = 6
    model, config, _ = load_run(run_c)
    test = load_dataset(config.data).test
    expected = model.infer(test.x[:n], {"local": 0.5}).predictions.tolist()

    def publish(dep):
        sensor = connect_client("sensors", dep.broker.settings("client"), lambda m: None, [])
        try:
            for i in range(n):
                for k in range(6):
                    frame = image_pixels(test.device_input(k)[i].numpy()).tobytes()
                    sensor.publish(f"sensors/cam{k}", frame, qos=1).wait_for_publish(10)
        finally:
            close_client(sensor)

    dep = start_local(
        run_c, {**SLOW_OPTIONS, "thresholds": "local=0.5"}, limit=n, source="mqtt:sensors/cam{id}"
    )
    try:
        run_local(dep, grace=3.0, timeout=120.0, during=publish)
    finally:
        report = finish_local(dep, 0.0)
    assert report.failed == {} and sorted(report.answers) == list(range(n))
    assert [report.answers[i].prediction for i in range(n)] == expected
    assert all(a.present == list(range(6)) for a in report.answers.values())
