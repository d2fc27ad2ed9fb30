"""Live input sources: folder, pipe and MQTT readings against hand-made expectations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddnn.runtime.sources import (
    FolderSource,
    MqttSource,
    PipeSource,
    Reading,
    open_source,
)
from ddnn.runtime.sources import folder as folder_source

T0 = 1_700_000_000.0


class FakeClock:
    """An injectable clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def level(k: np.ndarray) -> np.ndarray:
    """The training value of 8-bit levels: k/255 computed in float64, rounded once to float32."""
    return (np.asarray(k, dtype=np.float64) / 255.0).astype(np.float32)


def ListedFolder(folder: Path, shape: tuple[int, ...], **kwargs) -> FolderSource:  # noqa: N802
    """A folder source without the kernel's watch: it lists the folder at every poll."""
    return FolderSource(folder, shape, watch=False, **kwargs)


def poll_ready(src: FolderSource) -> list[Reading]:
    """Listed files are read once stable across two listings: the first poll sees them, the
    second reads."""
    assert src.poll() == []
    return src.poll()


def wait_readings(src: PipeSource, n: int, timeout: float = 30.0) -> list[Reading]:
    """Polls until ``n`` readings came and the stream finished, or fails after ``timeout``."""
    out: list[Reading] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out += src.poll()
        if len(out) >= n and src.finished:
            return out
        time.sleep(0.01)
    raise AssertionError(f"got {len(out)} of {n} readings, finished={src.finished}")


# -- folder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_png_comes_back_as_its_pixels_over_255(tmp_path, channels):
    rng = np.random.default_rng(channels)
    h, w = 5, 7  # not square: a swapped H/W would show
    pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255
    image = pixels[:, :, 0] if channels == 1 else pixels
    Image.fromarray(image).save(tmp_path / "cam0_000017.png")
    clock = FakeClock()
    src = ListedFolder(tmp_path, (channels, h, w), clock=clock)
    clock.now = T0 + 3.5
    [reading] = poll_ready(src)
    expected = np.stack([level(pixels[:, :, c]) for c in range(channels)])  # (C, H, W) by hand
    assert reading.data.dtype == np.float32 and reading.data.shape == (channels, h, w)
    np.testing.assert_array_equal(reading.data, expected)
    assert reading.sample == 17 and reading.captured == T0 + 3.5
    assert src.poll() == [] and not src.finished and not src.counters


def test_folder_converts_colour_to_the_device_channels_like_pillow(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "1.jpg", quality=95)
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "2.png")
    src = ListedFolder(tmp_path, (1, 4, 6))
    gray_of_jpeg = np.asarray(Image.open(tmp_path / "1.jpg").convert("L"))
    a, b = poll_ready(src)
    np.testing.assert_array_equal(a.data, level(gray_of_jpeg)[None])
    np.testing.assert_array_equal(b.data, level(rgb[:, :, 1])[None])
    src3 = ListedFolder(tmp_path, (3, 4, 6), on_done="keep")
    _, gray_as_rgb = poll_ready(src3)  # a grayscale file on a colour device: three equal planes
    np.testing.assert_array_equal(gray_as_rgb.data, np.stack([level(rgb[:, :, 1])] * 3))


def test_folder_npy_numbers_as_is_as_the_training_loader_took_them(tmp_path):
    floats = np.array([[0.25, -3.0, 1e6], [7.5, 0.0, -0.125]])  # float64: cast to float32
    u8 = np.array([[0, 1, 2], [128, 254, 255]], dtype=np.uint8)
    np.save(tmp_path / "0001.npy", floats)
    np.save(tmp_path / "0002.npy", u8)
    np.save(tmp_path / "0003.npy", floats.astype(np.float32))
    a, b, c = poll_ready(ListedFolder(tmp_path, (2, 3)))
    np.testing.assert_array_equal(a.data, floats.astype(np.float32))
    assert a.data.dtype == np.float32
    np.testing.assert_array_equal(b.data, u8.astype(np.float32))  # 0..255, not / 255
    np.testing.assert_array_equal(c.data, floats.astype(np.float32))
    assert [a.sample, b.sample, c.sample] == [1, 2, 3]


def test_folder_reads_in_name_order_with_sample_ids_from_stems(tmp_path):
    for name, value in [("b_3", 3), ("a_10", 10), ("img", 99), ("0009", 9), ("cam0_000017", 17)]:
        np.save(tmp_path / f"{name}.npy", np.full((2,), value, dtype=np.float32))
    readings = poll_ready(ListedFolder(tmp_path, (2,)))
    # name order: 0009 < a_10 < b_3 < cam0_000017 < img
    assert [r.sample for r in readings] == [9, 10, 3, 17, None]
    assert [float(r.data[0]) for r in readings] == [9, 10, 3, 17, 99]


def test_folder_counts_and_skips_bad_files_while_good_ones_come_through(tmp_path):
    good = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    Image.fromarray(good).save(tmp_path / "05.png")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "06.png")  # 3x2, not 2x2
    (tmp_path / "07.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    np.save(tmp_path / "08.npy", np.zeros((2, 2, 3), np.float32))  # (H, W, C), not (C, H, W)
    np.save(tmp_path / "09.npy", np.full((3, 2, 2), np.nan, np.float32))
    np.save(tmp_path / "10.npy", np.array([["a"] * 2] * 2))  # strings
    (tmp_path / "11.npy").write_bytes(b"garbage")
    (tmp_path / "12.txt").write_text("hello")
    np.save(tmp_path / "13.npy", np.full((3, 2, 2), 0.5, np.float32))
    counters = Counter({"frames_sent": 4})
    src = ListedFolder(tmp_path, (3, 2, 2), counters=counters)
    readings = poll_ready(src)
    assert [r.sample for r in readings] == [5, 13]
    np.testing.assert_array_equal(readings[0].data, level(good.transpose(2, 0, 1)))
    np.testing.assert_array_equal(readings[1].data, np.full((3, 2, 2), 0.5, np.float32))
    assert src.counters is counters
    assert counters == {
        "frames_sent": 4,
        "rejected_image_size": 1,
        "rejected_undecodable": 2,
        "rejected_npy_shape": 1,
        "rejected_non_finite": 1,
        "rejected_npy_dtype": 1,
        "rejected_file_type": 1,
    }
    assert src.poll() == [] and src.poll() == []  # rejected once, not again
    assert counters["rejected_undecodable"] == 2
    assert (tmp_path / "06.png").exists()  # left in place for inspection


def test_folder_image_on_a_non_image_device_is_rejected(tmp_path):
    Image.fromarray(np.zeros((2, 50), np.uint8)).save(tmp_path / "1.png")
    src = ListedFolder(tmp_path, (2, 50))
    assert poll_ready(src) == []
    assert src.counters == {"rejected_file_type": 1}


@pytest.mark.parametrize("on_done", ["keep", "move", "delete"])
def test_folder_on_done(tmp_path, on_done):
    np.save(tmp_path / "1.npy", np.ones(3, np.float32))
    src = ListedFolder(tmp_path, (3,), on_done=on_done)
    assert [r.sample for r in poll_ready(src)] == [1]
    assert src.poll() == [] and src.poll() == []  # never read twice
    assert (tmp_path / "1.npy").exists() == (on_done == "keep")
    assert (tmp_path / "done" / "1.npy").exists() == (on_done == "move")
    assert (tmp_path / "done").is_dir() == (on_done == "move")
    np.save(tmp_path / "1.npy", np.full(3, 2.0, np.float32))  # a new capture under the same name
    again = poll_ready(src)
    if on_done == "keep":
        assert again == []  # keep remembers names
    else:
        np.testing.assert_array_equal(again[0].data, np.full(3, 2.0, np.float32))


def test_folder_ignores_hidden_and_temporary_names_until_renamed(tmp_path):
    for name in (".hidden.npy", "2.npy.tmp", "3.npy.part", "4.NPY.TMP"):
        np.save(tmp_path / "x.npy", np.ones(3, np.float32))
        os.replace(tmp_path / "x.npy", tmp_path / name)
    src = ListedFolder(tmp_path, (3,))
    for _ in range(3):
        assert src.poll() == []
    os.replace(tmp_path / "2.npy.tmp", tmp_path / "2.npy")  # the writer's rename
    assert [r.sample for r in poll_ready(src)] == [2]
    assert not src.counters


def test_folder_waits_for_a_file_to_stop_growing(tmp_path):
    np.save(tmp_path / "whole.npy", np.arange(64, dtype=np.float32))
    blob = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "whole.npy").unlink()
    (tmp_path / "7.npy").write_bytes(blob[:100])  # half written
    (tmp_path / "8.npy").write_bytes(b"")  # created, nothing written yet
    src = ListedFolder(tmp_path, (64,))
    assert src.poll() == []
    with open(tmp_path / "7.npy", "ab") as f:  # the writer goes on between two polls
        f.write(blob[100:])
    assert src.poll() == []  # changed since the last poll: not ready
    [reading] = src.poll()
    np.testing.assert_array_equal(reading.data, np.arange(64, dtype=np.float32))
    assert src.poll() == [] and not src.counters  # the empty file is never read


def test_folder_missing_or_not_a_folder(tmp_path):
    for path in (tmp_path / "nope", tmp_path / "file"):
        (tmp_path / "file").write_text("x")
        with pytest.raises(ValueError, match="does not exist or is not a folder") as info:
            open_source(f"folder:{path}", (3,))
        assert "\n" not in str(info.value)


class Ticks:
    """An injectable monotonic clock for the folder's listings."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watched(folder: Path, shape: tuple[int, ...], **kwargs) -> tuple[FolderSource, Ticks]:
    ticks = Ticks()
    src = FolderSource(folder, shape, monotonic=ticks, **kwargs)
    assert src.poll_interval == folder_source.LIST_EVERY, "inotify should watch a tmp folder"
    assert src.poll() == []  # the first listing: nothing there yet
    return src, ticks


def test_a_watched_folder_reads_a_file_the_moment_its_writer_closes_it(tmp_path):
    src, _ = watched(tmp_path, (64,))
    try:
        np.save(tmp_path / "5.npy", np.arange(64, dtype=np.float32))  # open, write, close
        [reading] = src.poll()  # no second look, no listing (the clock did not move)
        assert reading.sample == 5
        np.testing.assert_array_equal(reading.data, np.arange(64, dtype=np.float32))
        blob = (tmp_path / "5.npy").read_bytes()
        with open(tmp_path / "6.npy", "wb") as f:  # a writer still at work
            f.write(blob[:100])
            f.flush()
            assert src.poll() == []
            f.write(blob[100:])
        [reading] = src.poll()  # closed: read now
        assert reading.sample == 6 and not src.counters
    finally:
        src.close()


def test_a_watched_folder_reads_a_file_renamed_into_it(tmp_path):
    src, _ = watched(tmp_path, (3,), on_done="delete")
    try:
        with open(tmp_path / "9.npy.part", "wb") as f:  # np.save would add ".npy" to a name
            np.save(f, np.full(3, 9.0, np.float32))
        assert src.poll() == []  # the temporary name is ignored
        os.replace(tmp_path / "9.npy.part", tmp_path / "9.npy")
        [reading] = src.poll()
        np.testing.assert_array_equal(reading.data, np.full(3, 9.0, np.float32))
        assert not (tmp_path / "9.npy").exists() and src.poll() == []
    finally:
        src.close()


def test_a_watched_folder_still_lists_itself_for_files_the_watch_did_not_see(tmp_path):
    np.save(tmp_path / "1.npy", np.ones(3, np.float32))  # there before the watch began
    src, ticks = watched(tmp_path, (3,))  # the first listing notes it
    try:
        assert src.poll() == []  # the next listing is not due yet
        ticks.now += folder_source.LIST_EVERY
        [reading] = src.poll()  # unchanged over a listing interval: read
        assert reading.sample == 1
    finally:
        src.close()


def test_a_watched_folder_wakes_its_node_and_falls_back_to_looking_when_removed(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    src, _ = watched(folder, (3,))
    woke = threading.Event()
    src.on_change = woke.set
    np.save(folder / "1.npy", np.ones(3, np.float32))
    assert woke.wait(10), "the watch did not call on_change for a finished file"
    assert [r.sample for r in src.poll()] == [1]
    shutil.rmtree(folder)
    deadline = time.monotonic() + 10
    while src.poll_interval != folder_source.LOOK_EVERY and time.monotonic() < deadline:
        time.sleep(0.01)
    assert src.poll_interval == folder_source.LOOK_EVERY  # the watch ended with the folder
    assert src.poll() == [] and src.counters == {"folder_unreadable": 1}
    src.close()


def test_without_inotify_a_folder_is_looked_at_every_few_milliseconds(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # as on a system without it
    src = FolderSource(tmp_path, (3,))
    assert src.poll_interval == folder_source.LOOK_EVERY
    np.save(tmp_path / "1.npy", np.ones(3, np.float32))
    assert [r.sample for r in poll_ready(src)] == [1]


# -- pipe --------------------------------------------------------------------------------------

RGB_2X2 = bytes(range(1, 13))  # pixels (R, G, B): (1,2,3) (4,5,6) / (7,8,9) (10,11,12)
RGB_2X2_CHW = np.array(
    [
        [[1, 4], [7, 10]],  # R plane
        [[2, 5], [8, 11]],  # G plane
        [[3, 6], [9, 12]],  # B plane
    ]
)


@pytest.fixture
def pipe_fds():
    r, w = os.pipe()
    fds = {"r": r, "w": w}
    yield fds
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass


def end_stream(fds: dict[str, int]) -> None:
    os.close(fds.pop("w"))


def test_pipe_rgb_frames_are_interleaved_rows_to_chw(pipe_fds):
    clock = FakeClock()
    src = PipeSource(pipe_fds["r"], (3, 2, 2), clock=clock)
    second = bytes(255 - b for b in RGB_2X2)
    os.write(pipe_fds["w"], RGB_2X2 + second[:5])  # a frame and a piece of the next
    os.write(pipe_fds["w"], second[5:])
    end_stream(pipe_fds)
    try:
        a, b = wait_readings(src, 2)
    finally:
        src.close()
    np.testing.assert_array_equal(a.data, level(RGB_2X2_CHW))
    np.testing.assert_array_equal(b.data, level(255 - RGB_2X2_CHW))
    assert a.data.dtype == np.float32 and a.sample is None and a.captured == T0
    assert src.finished and not src.counters


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 2, 3), np.array([[[10, 20, 30], [40, 50, 60]]])),  # gray: rows of pixels
        ((2, 3), np.array([[10, 20, 30], [40, 50, 60]])),  # not an image: C order
        ((2, 1, 3), np.array([[[10, 20, 30]], [[40, 50, 60]]])),  # 2 channels: C order too
    ],
)
def test_pipe_gray_and_non_image_layouts(pipe_fds, shape, expected):
    src = PipeSource(pipe_fds["r"], shape)
    os.write(pipe_fds["w"], bytes([10, 20, 30, 40, 50, 60]))
    end_stream(pipe_fds)
    try:
        [reading] = wait_readings(src, 1)
    finally:
        src.close()
    np.testing.assert_array_equal(reading.data, level(expected))


def test_pipe_short_read_at_end_is_counted_and_finishes(pipe_fds):
    counters: Counter[str] = Counter()
    src = PipeSource(pipe_fds["r"], (3, 2, 2), counters=counters)
    os.write(pipe_fds["w"], RGB_2X2 + RGB_2X2[:7])
    assert not src.finished
    end_stream(pipe_fds)
    try:
        [reading] = wait_readings(src, 1)
    finally:
        src.close()
    np.testing.assert_array_equal(reading.data, level(RGB_2X2_CHW))
    assert counters == {"short_read": 1} and src.finished


def test_pipe_overflow_keeps_the_latest_frames(pipe_fds):
    src = PipeSource(pipe_fds["r"], (2,), max_queue=2)
    os.write(pipe_fds["w"], bytes([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))
    end_stream(pipe_fds)
    src._thread.join(30)  # let the reader take all five before the node polls
    assert not src._thread.is_alive()
    readings = src.poll()
    src.close()
    assert [r.data.tolist() for r in readings] == [level([3, 3]).tolist(), level([4, 4]).tolist()]
    assert src.counters == {"dropped_behind": 3} and src.finished


def open_writer(fifo: Path, timeout: float = 30.0) -> int:
    """The FIFO's write end, once the source's reader has it open (never blocks the test)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
        except OSError:
            assert time.monotonic() < deadline, "the source never opened the FIFO"
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


def test_pipe_fifo_opens_without_blocking_and_reads(tmp_path):
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    src = open_source(f"pipe:{fifo}", (3, 2, 2))  # returns although no writer is there yet
    assert src.description == f"pipe:{fifo}" and not src.finished
    try:
        writer = open_writer(fifo)
        os.write(writer, RGB_2X2 * 3)
        os.close(writer)
        readings = wait_readings(src, 3)
    finally:
        src.close()
    assert len(readings) == 3
    for r in readings:
        np.testing.assert_array_equal(r.data, level(RGB_2X2_CHW))


def test_pipe_close_before_any_writer_returns(tmp_path):
    fifo = tmp_path / "idle.fifo"
    os.mkfifo(fifo)
    src = open_source(f"pipe:{fifo}", (4,))
    assert isinstance(src, PipeSource)
    src.close(timeout=20)
    assert not src._thread.is_alive()
    assert src.poll() == [] and src.finished


def test_pipe_regular_file_and_stdin(tmp_path, monkeypatch, pipe_fds):
    recorded = tmp_path / "frames.raw"
    recorded.write_bytes(bytes([1, 2, 3, 4]) * 2)
    src = open_source(f"pipe:{recorded}", (4,))
    try:
        assert len(wait_readings(src, 2)) == 2
    finally:
        src.close()
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(fileno=lambda: pipe_fds["r"]))
    src = open_source("pipe:-", (4,))
    assert src.description == "pipe:-"
    os.write(pipe_fds["w"], bytes([5, 6, 7, 8]))
    end_stream(pipe_fds)
    try:
        [reading] = wait_readings(src, 1)
    finally:
        src.close()
    np.testing.assert_array_equal(reading.data, level([5, 6, 7, 8]))


def test_pipe_missing_path(tmp_path):
    with pytest.raises(ValueError, match="source pipe") as info:
        open_source(f"pipe:{tmp_path / 'nope'}", (4,))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="is a folder; use folder:"):
        open_source(f"pipe:{tmp_path}", (4,))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_pipe_from_ffmpeg_rawvideo():
    cmd = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=25"]
    cmd += ["-frames:v", "10", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        src = PipeSource(proc.stdout.fileno(), (3, 32, 32), description="pipe:-")
        try:
            readings = wait_readings(src, 10, timeout=60)
        finally:
            src.close()
        assert proc.wait(timeout=60) == 0
    assert len(readings) == 10 and not src.counters
    for r in readings:
        assert r.data.shape == (3, 32, 32) and r.data.dtype == np.float32
        k = np.rint(r.data.astype(np.float64) * 255)
        assert ((k >= 0) & (k <= 255)).all()
        np.testing.assert_array_equal(r.data, level(k))  # every value is exactly k/255
        assert r.data.std() > 0.05  # a test pattern, not a blank frame
    assert not np.array_equal(readings[0].data[:, 0], readings[0].data[:, -1])  # rows differ


# -- mqtt --------------------------------------------------------------------------------------


def test_mqtt_raw_and_json_payloads():
    clock = FakeClock()
    src = open_source("mqtt:plant-1/cam0/raw", (3, 2, 2), clock=clock)
    assert isinstance(src, MqttSource) and src.topic == "plant-1/cam0/raw"
    assert src.description == "mqtt:plant-1/cam0/raw"
    values = np.linspace(-1.0, 2.0, 12).reshape(3, 2, 2)
    src.feed(RGB_2X2)
    clock.now = T0 + 1
    src.feed(json.dumps(values.ravel().tolist()).encode())  # flat
    src.feed(json.dumps(values.tolist()).encode())  # nested as (C, H, W)
    src.feed(b" [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]\n")  # integers, whitespace
    raw, flat, nested, ints = src.poll()
    np.testing.assert_array_equal(raw.data, level(RGB_2X2_CHW))
    np.testing.assert_array_equal(flat.data, values.astype(np.float32))
    np.testing.assert_array_equal(nested.data, values.astype(np.float32))
    np.testing.assert_array_equal(ints.data, np.arange(12, dtype=np.float32).reshape(3, 2, 2))
    assert raw.captured == T0 and flat.captured == T0 + 1 and flat.sample is None
    assert flat.data.dtype == np.float32 and src.poll() == []
    assert not src.counters and not src.finished


def test_mqtt_bad_payloads_are_counted_never_raised():
    counters = Counter({"score_frames": 1})
    src = MqttSource("sensors/acc", (2, 3), counters=counters)
    six = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    bad = {
        "rejected_payload_size": [
            bytes(5),
            bytes(7),
            b"",
            json.dumps(six[:5]).encode(),
            b"[" + b"0," * 10_000 + b"0]",  # a flood: refused before parsing
            b'{"values": [1, 2, 3, 4, 5, 6]}',
        ],
        "rejected_malformed": [
            b"[0.1, 0.2, 0.3, 0.4, 0.5,",  # cut short
            b"[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]",
            b"[\xff\xfe]",  # not UTF-8
            json.dumps([[1, 2], {"a": 1}, 3, 4]).encode(),
            json.dumps(["1", 2, 3, 4, 5, 6]).encode(),
            json.dumps([True, 2, 3, 4, 5, 6]).encode(),
            json.dumps([1, 2, 3, 4, 5, None]).encode(),
            json.dumps([[1, 2], [3, 4, 5, 6]]).encode(),  # ragged
            json.dumps([[1, 2], [3, 4], [5, 6]]).encode(),  # nested (3, 2), device is (2, 3)
            b"[" * 700 + b"]" * 700,  # deeper than any array
        ],
        "rejected_non_finite": [
            b"[NaN, 0, 0, 0, 0, 0]",
            b"[0, 0, Infinity, 0, 0, 0]",
            b"[0, 0, 0, 1e39, 0, 0]",  # finite in float64, not in float32
            b"[0, 0, 0, 0, 0, 1" + b"0" * 400 + b"]",  # an integer beyond float range
        ],
    }
    for payloads in bad.values():
        for payload in payloads:
            src.feed(payload)
    src.feed(json.dumps(six).encode())
    [reading] = src.poll()
    np.testing.assert_array_equal(reading.data, np.array(six, np.float32).reshape(2, 3))
    assert counters == {"score_frames": 1, **{k: len(v) for k, v in bad.items()}}


def test_mqtt_queue_keeps_the_latest():
    src = MqttSource("t", (1,), max_queue=2)
    for k in (1, 2, 3):
        src.feed(bytes([k]))
    assert [r.data.tolist() for r in src.poll()] == [level([2]).tolist(), level([3]).tolist()]
    assert src.counters == {"dropped_behind": 1}


@pytest.mark.parametrize("topic", ["sensors/+/raw", "sensors/#", "#", "a/b+", "a\0b"])
def test_mqtt_wildcard_topic_refused(topic):
    with pytest.raises(ValueError, match="wildcard") as info:
        open_source(f"mqtt:{topic}", (4,))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="empty"):
        MqttSource("", (4,))


# -- spec parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    ["", "folder", "/data/cam0", "cam:/data", "FOLDER:/data", ":x", "http://host", "folder:",
     "pipe:", "mqtt:"],
)  # fmt: skip
def test_malformed_spec_one_line_naming_the_schemes(spec):
    with pytest.raises(ValueError) as info:
        open_source(spec, (3, 32, 32))
    message = str(info.value)
    assert "\n" not in message and repr(spec) in message
    for accepted in ("folder:DIR", "pipe:PATH", "pipe:-", "mqtt:TOPIC"):
        assert accepted in message


def test_bad_on_done_and_shape(tmp_path):
    with pytest.raises(ValueError, match="'archive' is not one of: keep, move, delete"):
        open_source(f"folder:{tmp_path}", (3,), on_done="archive")
    with pytest.raises(ValueError, match="positive"):
        open_source(f"folder:{tmp_path}", (3, 0))


def test_open_source_shares_the_node_counters(tmp_path):
    counters: Counter[str] = Counter()
    src = open_source(f"folder:{tmp_path}", (3,), counters=counters, on_done="move")
    assert isinstance(src, FolderSource) and src.counters is counters
    assert src.description == f"folder:{tmp_path}" and (Path(tmp_path) / "done").is_dir()
    assert not src.finished


def test_a_pipe_wakes_its_node_on_each_frame_and_at_the_end(pipe_fds):
    """The node waits on its inbox; the reader nudges it for every frame and for the end, so
    an idle live device does not poll (CPU) and a frame does not wait for the next poll."""
    import threading

    from ddnn.runtime.node import Inbox

    inbox = Inbox(Counter())
    calls: list[int] = []
    woke = threading.Event()

    def on_change() -> None:
        calls.append(1)
        inbox.nudge()
        woke.set()

    src = PipeSource(pipe_fds["r"], (2,))
    src.on_change = on_change
    try:
        os.write(pipe_fds["w"], bytes([1, 2]))
        assert woke.wait(30.0)  # generous: only a broken hook would take this long
        assert inbox.get(timeout=30.0) is None  # the nudge: ends the wait, nothing to handle
        (reading,) = src.poll()
        np.testing.assert_array_equal(reading.data, np.float32([1, 2]) / np.float32(255))
        woke.clear()
        end_stream(pipe_fds)
        assert woke.wait(30.0)
        assert src.finished and len(calls) == 2 and inbox.bytes == 0
    finally:
        src.close()
