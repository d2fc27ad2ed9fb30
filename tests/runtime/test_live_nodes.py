"""Live devices and the trigger, driven by hand: fake MQTT client, fake clock, a scripted source."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from test_node_logic import SETTINGS, TOPICS, FakeEngine, message, progress, wired

from ddnn.runtime.live_device import LiveDeviceNode
from ddnn.runtime.trigger import TriggerNode
from ddnn.wire import Expect, FrameKind, decode_frame
from ddnn.wire.control import decode_tick, encode_tick


@dataclass(frozen=True)
class Reading:
    data: np.ndarray
    captured: float
    sample: int | None = None


class ScriptedSource:
    """Hands out the readings pushed into it; ``finished`` once told so."""

    description = "scripted"
    poll_interval = (
        0.01  # it says nothing when a reading comes: look often (as a folder without inotify)
    )

    def __init__(self) -> None:
        self.queue: list[Reading] = []
        self.counters: Counter[str] = Counter()
        self.finished = False
        self.closed = False

    def push(self, value: float, captured: float, sample: int | None = None) -> None:
        self.queue.append(Reading(np.full((2,), value, np.float32), captured, sample))

    def poll(self) -> list[Reading]:
        out, self.queue = self.queue, []
        return out

    def close(self) -> None:
        self.closed = True


def live(triggered: bool) -> tuple[LiveDeviceNode, ScriptedSource]:
    source = ScriptedSource()
    node = wired(LiveDeviceNode(0, FakeEngine(), source, SETTINGS, TOPICS, triggered=triggered))
    node._begin()
    return node, source


def sent(node) -> list[tuple[list[int], float]]:
    """(sample ids, capture time) of every SCORES frame the device published."""
    expect = Expect(7, {FrameKind.SCORES_F32}, num_classes=3)
    frames = [decode_frame(f, expect, now=1.7e9) for f in node.client.on(TOPICS.device_scores(0))]
    return [(list(f.sample_ids), f.captured) for f in frames]


def test_free_running_readings_take_their_own_ids_or_the_next_one():
    node, source = live(triggered=False)
    source.push(0.1, 1.7e9 + 0.5, sample=10)
    source.push(0.2, 1.7e9 + 0.6, sample=11)
    node.poll(0.0)
    source.push(0.3, 1.7e9 + 0.7)  # no id: the next one
    source.push(0.4, 1.7e9 + 0.8, sample=5)  # behind: late, counted
    node.poll(0.0)
    assert sent(node) == [([10, 11], 1.7e9 + 0.5), ([12], 1.7e9 + 0.7)]
    assert node.counters["readings_behind"] == 1


def test_a_tick_takes_the_latest_reading_and_older_ones_are_superseded():
    node, source = live(triggered=True)
    source.push(0.1, 1.7e9 + 1.0)
    source.push(0.2, 1.7e9 + 1.1)
    node.poll(0.0)
    assert sent(node) == []  # free readings wait for a tick
    node.dispatch(message(TOPICS.tick, encode_tick(7, 1.7e9 + 1.2)))
    node.poll(0.0)
    assert sent(node) == [([7], 1.7e9 + 1.1)]
    assert node.counters["readings_superseded"] == 1


def test_a_tick_without_a_new_reading_waits_its_deadline_then_the_device_is_absent():
    node, source = live(triggered=True)
    node.dispatch(message(TOPICS.tick, encode_tick(3, 1.7e9)))
    node.clock.t += 0.4
    node.poll(0.0)
    source.push(0.5, 1.7e9 + 0.45)  # arrives within the tick deadline (0.5 s)
    node.poll(0.0)
    assert sent(node) == [([3], 1.7e9 + 0.45)]
    node.dispatch(message(TOPICS.tick, encode_tick(4, 1.7e9 + 1)))
    node.clock.t += 0.51
    node.poll(0.0)
    source.push(0.6, 1.7e9 + 1.6)  # too late for tick 4: it waits for tick 5
    node.poll(0.0)
    assert node.counters["absent_no_reading"] == 1 and len(sent(node)) == 1
    node.dispatch(message(TOPICS.tick, encode_tick(5, 1.7e9 + 2)))
    node.poll(0.0)
    assert sent(node)[-1] == ([5], 1.7e9 + 1.6)
    # a tick for an id already passed, and a malformed tick, change nothing
    node.dispatch(message(TOPICS.tick, encode_tick(2, 1.7e9 + 3)))
    node.dispatch(message(TOPICS.tick, b"\x28\x01"))
    assert node.pending == {} and node.counters["rejected_truncated"] == 1


def test_the_device_is_done_when_its_source_ends():
    node, source = live(triggered=False)
    source.push(0.1, 1.7e9)
    source.finished = True
    node.poll(0.0)
    assert node.finished and node.client.on(TOPICS.status("device_0"))[-1] == b"done"
    node.close = lambda: source.close()  # no broker to disconnect from
    node.close()
    assert source.closed


# -- the trigger ---------------------------------------------------------------------------------


def trigger(rate: float = 10.0, count: int | None = None, first: int | None = None):
    node = wired(TriggerNode(SETTINGS, TOPICS, rate, count=count, first=first))
    return node


def ticks(node) -> list[int]:
    return [decode_tick(p)[0] for p in node.client.on(TOPICS.tick)]


def test_the_trigger_continues_after_the_deployments_newest_sample_at_its_rate():
    node = trigger(rate=10.0, count=3)
    node.dispatch(message(TOPICS.progress, progress(40, 42)))
    node.start(wait_for_progress=0.0)
    node.safe_tick()
    assert ticks(node) == [43]
    node.clock.t += 0.099
    node.safe_tick()
    assert ticks(node) == [43]
    node.clock.t += 0.002
    node.safe_tick()
    assert ticks(node) == [43, 44]
    node.clock.t += 1.0  # late: it catches up, then stops at the count
    node.safe_tick()
    assert ticks(node) == [43, 44, 45]
    assert node.client.on(TOPICS.status("trigger"))[-1] == b"done"
    assert node.next_wakeup() is None


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0.0}, {"rate": float("nan")}, {"rate": 1.0, "count": 0}, {"first": -1}]
)
def test_bad_trigger_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TriggerNode(SETTINGS, TOPICS, **{"rate": 1.0, **kwargs})


def test_an_mqtt_sensor_topic_feeds_the_device_through_its_own_client():
    from ddnn.runtime.sources import MqttSource

    source = MqttSource("plant/sensor0", (2,))
    node = wired(LiveDeviceNode(0, FakeEngine(), source, SETTINGS, TOPICS))
    node._begin()
    assert "plant/sensor0" in node.subscriptions()
    node.dispatch(message("plant/sensor0", b"[0.25, 0.5]"))
    node.dispatch(message("plant/sensor0", bytes([51, 102])))  # raw uint8: k / 255
    node.dispatch(message("plant/sensor0", b"[1, 2, 3]"))  # wrong size: counted
    node.poll(0.0)
    assert [ids for ids, _ in sent(node)] == [[0, 1]]
    assert node.counters["rejected_payload_size"] + node.counters["rejected_malformed"] == 1
