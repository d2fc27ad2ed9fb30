"""Node decisions driven by hand: fake MQTT client, fake clock, no broker, no sleeping.

Windows, deadlines, gap failures, resends and the collector's early stop are checked against
hand-computed expectations, with time advanced explicitly.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ddnn.runtime.aggregator_node import AggregatorNode
from ddnn.runtime.client import ResultCollector
from ddnn.runtime.device_node import DeviceNode
from ddnn.runtime.messages import parse_answers, parse_progress
from ddnn.runtime.mqtt import BrokerSettings
from ddnn.runtime.protocol import Topics
from ddnn.runtime.window import FinishedIds
from ddnn.wire import encode_scores_frame, encode_varint

SETTINGS = BrokerSettings("127.0.0.1", 1)
TOPICS = Topics("t")


class FakeClient:
    """Records what a node publishes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic, payload, qos=0, retain=False, properties=None):
        self.sent.append((topic, bytes(payload)))

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.sent if t == topic]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def message(topic: str, payload: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, payload=payload, qos=1, properties=None)


def progress(decided: int, latest: int) -> bytes:
    """A PROGRESS message, laid out by hand (ddnn.wire.control): head, decided + 1, latest + 1."""
    return bytes([0x25]) + encode_varint(decided + 1) + encode_varint(latest + 1)


def wired(node):
    node.client = FakeClient()
    node.clock = Clock()
    node.wall = Clock(1.7e9)
    return node


# -- the aggregator -----------------------------------------------------------------------------


@pytest.fixture
def aggregator(run_c):
    return wired(AggregatorNode(run_c, SETTINGS, TOPICS, {"local": 1.0}, deadline=0.5, window=8))


def scores_frame(node, device: int, sample: int, scores=(2.0, 0.0, 0.0), count=1):
    frame = encode_scores_frame(
        np.tile(np.asarray(scores, dtype=np.float32), (count, 1)),
        sender=device,
        first_sample=sample,
        model_version=node.model_version,
        encoding="float32",
        captured=node.wall(),
    )
    return message(TOPICS.device_scores(device), frame)


def send_all_devices(node, sample: int) -> None:
    for k in range(node.num_devices):
        node.dispatch(scores_frame(node, k, sample))


def answers(node) -> list:
    return [a for p in node.client.on(TOPICS.results) for a in parse_answers(p)]


def test_frames_beyond_the_window_are_counted_and_dropped(aggregator):
    # window 8 above the highest decided sample (-1 at start): ids 0..7 are in, 8 is out.
    aggregator.dispatch(scores_frame(aggregator, 0, 7))
    aggregator.dispatch(scores_frame(aggregator, 0, 8))
    aggregator.dispatch(scores_frame(aggregator, 0, 10**6))
    assert set(aggregator.arrivals) == {7}
    assert aggregator.counters["rejected_out_of_window"] == 2
    aggregator.safe_tick()
    assert parse_progress(aggregator.client.on(TOPICS.progress)[-1]).latest == 7


def test_all_devices_decide_at_once_and_the_window_moves(aggregator):
    for s in range(3):
        send_all_devices(aggregator, s)
    aggregator.safe_tick()
    got = answers(aggregator)
    assert [a.sample for a in got] == [0, 1, 2]
    assert all(a.exit == "local" and a.present == list(range(6)) for a in got)
    # decided 2: the window now reaches sample 10, not 11
    aggregator.dispatch(scores_frame(aggregator, 1, 10))
    aggregator.dispatch(scores_frame(aggregator, 1, 11))
    assert 10 in aggregator.arrivals and 11 not in aggregator.arrivals


def test_answers_carry_schema_class_name_confidence_missing_and_model_version(aggregator, run_c):
    # MP fusion (the tiny run's local aggregation) of identical (2, 0, 0) rows is (2, 0, 0):
    # softmax 0 = e^2 / (e^2 + 2); sample 1 lacks devices 3 and 5
    send_all_devices(aggregator, 0)
    for k in (0, 1, 2, 4):
        aggregator.dispatch(scores_frame(aggregator, k, 1))
    aggregator.clock.t += 0.6
    aggregator.safe_tick()
    a0, a1 = answers(aggregator)
    assert (a0.schema, a0.prediction, a0.missing, a1.missing) == (1, 0, [], [3, 5])
    assert a0.confidence == pytest.approx(np.exp(2) / (np.exp(2) + 2), abs=1e-6)
    names = json.loads((run_c / "manifest.json").read_text())["class_names"]
    assert a0.class_name == names[0] and a0.class_name != ""
    assert a0.model_version == aggregator.model_version
    assert a0.latency_ms == pytest.approx(1000 * (a0.answered - a0.captured))


def test_a_partial_sample_waits_for_the_deadline_then_fuses_without_the_missing(aggregator):
    aggregator.dispatch(scores_frame(aggregator, 0, 0))
    aggregator.dispatch(scores_frame(aggregator, 4, 0))
    aggregator.clock.t += 0.49
    aggregator.safe_tick()
    assert answers(aggregator) == []
    aggregator.clock.t += 0.02
    aggregator.safe_tick()
    (a,) = answers(aggregator)
    assert a.present == [0, 4]
    assert a.flags == ["devices_missing:[1, 2, 3, 5]"]


def test_ids_passed_without_any_frame_are_reported_failed_after_the_deadline(aggregator):
    send_all_devices(aggregator, 3)  # 0, 1 and 2 never arrive: lost in transit
    aggregator.safe_tick()
    assert [a.sample for a in answers(aggregator)] == [3]
    assert sorted(aggregator.gaps) == [0, 1, 2]
    aggregator.dispatch(scores_frame(aggregator, 2, 1))  # sample 1 turns up after all
    assert sorted(aggregator.gaps) == [0, 2]
    aggregator.clock.t += 0.6
    aggregator.safe_tick()
    by_sample = {a.sample: a for a in answers(aggregator)}
    assert sorted(by_sample) == [0, 1, 2, 3]
    assert (
        by_sample[0].failed
        and by_sample[2].failed
        and "reached the aggregator" in by_sample[0].error
    )
    assert by_sample[1].present == [2] and not by_sample[1].failed
    # a frame of a failed id is late now, and makes the aggregator repeat its progress
    sent = len(aggregator.client.on(TOPICS.progress))
    aggregator.dispatch(scores_frame(aggregator, 0, 0))
    aggregator.clock.t += 0.01
    aggregator.safe_tick()
    assert aggregator.counters["late_frames"] == 1
    assert len(aggregator.client.on(TOPICS.progress)) == sent + 1


def test_a_forged_frame_ahead_waits_for_the_devices_and_moves_nothing(aggregator):
    # every device is at sample 1; device 0's login sends a frame for 6 (inside the window)
    for s in (0, 1):
        send_all_devices(aggregator, s)
    aggregator.safe_tick()
    aggregator.dispatch(scores_frame(aggregator, 0, 6, scores=(0.0, 0.0, 9.0)))
    aggregator.clock.t += 1.0  # twice the deadline: five devices are still speaking, behind 6
    aggregator.safe_tick()
    assert aggregator.max_decided == 1 and aggregator.gaps == {}
    assert [a.sample for a in answers(aggregator)] == [0, 1]
    # the devices reach 2..6 in their own time; device 0's real frame replaces the forged one
    for s in range(2, 7):
        send_all_devices(aggregator, s)
    aggregator.safe_tick()
    by_sample = {a.sample: a for a in answers(aggregator)}
    assert sorted(by_sample) == list(range(7)) and aggregator.max_decided == 6
    assert by_sample[6].prediction == 0 and by_sample[6].present == list(range(6))
    assert not any(a.failed for a in by_sample.values())


def test_a_sample_most_devices_never_reach_is_decided_late_without_moving_the_position(
    aggregator,
):
    send_all_devices(aggregator, 0)
    aggregator.safe_tick()
    aggregator.dispatch(scores_frame(aggregator, 2, 5))  # device 2 alone, the others at 0
    for _ in range(9):  # the others keep speaking (late frames), never reaching 5
        aggregator.clock.t += 0.5
        aggregator.dispatch(scores_frame(aggregator, 1, 0))
        aggregator.safe_tick()
    assert [a.sample for a in answers(aggregator)] == [0]
    aggregator.clock.t += 0.6  # ten deadlines after the frame
    aggregator.safe_tick()
    (late,) = answers(aggregator)[1:]
    assert late.sample == 5 and late.present == [2] and "devices_missing" in late.flags[0]
    assert aggregator.max_decided == 0 and aggregator.gaps == {}
    assert aggregator.counters["decided_stale"] == 1


def test_devices_that_fell_silent_do_not_hold_a_sample_past_its_deadline(aggregator):
    send_all_devices(aggregator, 0)
    aggregator.safe_tick()
    aggregator.clock.t += 5.1  # every device silent for the stale time (no Last Will yet)
    for k in (0, 1):
        aggregator.dispatch(scores_frame(aggregator, k, 1))
    aggregator.clock.t += 0.5
    aggregator.safe_tick()
    assert [a.sample for a in answers(aggregator)] == [0, 1]
    assert aggregator.max_decided == 1


def test_progress_goes_out_every_window_over_8_decisions_or_every_quarter_second(run_c):
    node = wired(AggregatorNode(run_c, SETTINGS, TOPICS, {"local": 1.0}, window=64))
    for s in range(20):  # one decision per tick, no time passing
        send_all_devices(node, s)
        node.safe_tick()
    decided = [parse_progress(p).decided for p in node.client.on(TOPICS.progress)]
    assert decided == [0, 8, 16]  # the first at once, then every 64 / 8 decisions
    node.clock.t += 0.24
    node.safe_tick()
    assert len(node.client.on(TOPICS.progress)) == 3
    node.clock.t += 0.01
    node.safe_tick()
    assert parse_progress(node.client.on(TOPICS.progress)[-1]).decided == 19
    node.clock.t += 1.0
    node.safe_tick()  # nothing moved: nothing sent
    assert len(node.client.on(TOPICS.progress)) == 4


def test_a_restarted_aggregator_resumes_from_its_retained_progress(aggregator):
    aggregator.dispatch(message(TOPICS.progress, progress(100, 103)))
    assert aggregator.max_decided == 100
    aggregator.dispatch(scores_frame(aggregator, 0, 50))  # long decided
    aggregator.dispatch(scores_frame(aggregator, 0, 108))  # in the window 101..108
    aggregator.dispatch(scores_frame(aggregator, 0, 109))
    assert set(aggregator.arrivals) == {108}
    assert aggregator.counters["late_frames"] == 1
    assert aggregator.counters["rejected_out_of_window"] == 1
    # only the first progress after a start counts: later ones (our own echo) change nothing
    aggregator.dispatch(message(TOPICS.progress, progress(5000, 5000)))
    assert aggregator.max_decided == 100


@pytest.mark.parametrize(
    "topic, payload",
    [
        ("progress", b'{"decided": 1, "latest": Infinity}'),
        ("progress", b"[" * 100_000),
        ("progress", b'{"decided": 1e400, "latest": 2}'),
        ("progress", bytes([0x25]) + b"\xff" * 7 + b"\x7f\x01"),  # decided 2**56 - 2
        ("results", b'[{"sample": Infinity, "prediction": 0, "exit": "local", "present": []}]'),
        ("results", b'[{"sample": "a", "prediction": 0, "exit": "local", "present": []}]'),
        ("receipts", b"[1, 2]"),
        ("status", b"\xff" * 10),
        ("control", b"start nan"),
        ("control", b"start inf"),
        ("control", b"start -1"),
        ("control", b"reboot"),
    ],
)
def test_malformed_messages_are_counted_and_change_nothing(aggregator, topic, payload):
    full = {
        "progress": TOPICS.progress,
        "results": TOPICS.results,
        "receipts": TOPICS.edge_receipts(0),
        "status": TOPICS.status("device_1"),
        "control": TOPICS.control,
    }[topic]
    aggregator.dispatch(message(full, payload))
    rejected = sum(v for k, v in aggregator.counters.items() if k.startswith("rejected_"))
    assert rejected == 1, dict(aggregator.counters)
    assert aggregator.max_decided == -1 and not aggregator.stopping
    assert aggregator.counters["handler_error"] == 0


def test_non_finite_scores_are_rejected_before_fusion(aggregator):
    frame = bytearray(scores_frame(aggregator, 0, 0).payload)
    frame[-4:] = np.float32(np.nan).tobytes()  # the last class score of the one row
    aggregator.dispatch(message(TOPICS.device_scores(0), bytes(frame)))
    assert aggregator.counters["rejected_non_finite"] == 1 and not aggregator.arrivals


def test_v1_frames_and_foreign_frames_are_refused_with_their_reason(aggregator):
    v1 = b"DN\x01\x01" + bytes(29) + bytes(12)  # a v1 SCORES frame: 33-byte header, 3 floats
    aggregator.dispatch(message(TOPICS.device_scores(0), v1))
    other_model = encode_scores_frame(
        np.zeros((1, 3)),
        sender=0,
        first_sample=0,
        model_version=aggregator.model_version ^ 0xFFFF,
        encoding="float32",
        captured=0.0,
    )
    aggregator.dispatch(message(TOPICS.device_scores(0), other_model))
    aggregator.dispatch(message(TOPICS.device_scores(1), scores_frame(aggregator, 0, 0).payload))
    huge = scores_frame(aggregator, 0, 0, count=aggregator.window + 1)  # over the count limit
    aggregator.dispatch(huge)
    assert [aggregator.counters[f"rejected_{r}"] for r in ("version_1", "wrong_model")] == [1, 1]
    assert aggregator.counters["rejected_topic_mismatch"] == 1
    assert aggregator.counters["rejected_count"] == 1
    assert not aggregator.arrivals


def test_a_batched_frame_is_split_into_its_samples_and_its_costs_shared(aggregator):
    frame = scores_frame(aggregator, 2, 4, count=3)  # samples 4, 5, 6 of device 2
    aggregator.dispatch(frame)
    assert sorted(aggregator.arrivals) == [4, 5, 6]
    # header: head 1 + sender 1 + first 1 + count 1 + model 2 + time 3 = 9 B for 3 samples
    a = aggregator.arrivals[5]
    assert a.payload == {"2": 12} and a.header == {"2": 3.0}
    beyond = scores_frame(aggregator, 1, 6, count=4)  # 6, 7 in the window (..7); 8, 9 beyond
    aggregator.dispatch(beyond)
    assert aggregator.counters["rejected_out_of_window"] == 2
    assert 1 in aggregator.arrivals[7].scores and 8 not in aggregator.arrivals


def test_decided_state_stays_bounded_over_a_long_run(aggregator):
    for s in range(3000):
        send_all_devices(aggregator, s)
        if s % 8 == 7:
            aggregator.safe_tick()
    aggregator.safe_tick()
    assert aggregator.max_decided == 2999
    assert len(aggregator.finished) <= 2 * aggregator.finished.keep
    assert not aggregator.arrivals and not aggregator.gaps


# -- FinishedIds ------------------------------------------------------------------------------


def test_finished_ids_are_exact_above_the_horizon_and_bounded():
    ids = FinishedIds(keep=10)
    ids.add([0, 2, 5])
    assert 2 in ids and 1 not in ids and 5 in ids
    ids.add(range(6, 40))  # 37 ids > 2 * keep: the horizon moves to 39 - 10 = 29
    assert ids.horizon == 29 and len(ids) == 10
    assert 1 in ids  # below the horizon everything counts as finished
    ids.advance(5)  # never moves down
    assert ids.horizon == 29


# -- the device -----------------------------------------------------------------------------------


class FakeEngine:
    num_classes = 3
    input_shape = (2,)
    feature_shape = (4,)
    model_version = 7

    def infer_batch(self, x):
        scores = np.tile(np.array([1.0, 0.0, -1.0], dtype=np.float32), (len(x), 1))
        return scores, np.zeros((len(x), 1), dtype=np.uint8)


def test_a_device_resends_its_frames_in_flight_when_progress_stalls():
    node = wired(
        DeviceNode(
            0,
            FakeEngine(),
            np.zeros((20, 2), np.float32),
            SETTINGS,
            TOPICS,
            batch=4,
            window=4,
            resend_after=2.0,
        )
    )
    node._begin()
    node.poll(0.0)  # captures 0..3 in one batched frame, then the window is full
    node.poll(0.0)
    scores = node.client.on(TOPICS.device_scores(0))
    assert len(scores) == 1 and node.in_flight == {0: (3, scores[0])}
    node.clock.t += 1.9
    node.poll(0.0)
    assert len(node.client.on(TOPICS.device_scores(0))) == 1  # not yet
    node.clock.t += 0.2
    node.poll(0.0)
    assert node.client.on(TOPICS.device_scores(0)) == scores * 2  # the same frame again
    assert node.counters["resent"] == 4
    node.clock.t += 2.1  # the back-off doubled: 4 s now
    node.poll(0.0)
    assert node.counters["resent"] == 4
    # progress: 0..1 decided -> 2 more samples may be captured; 2..3 keep their frame in flight
    node.dispatch(message(TOPICS.progress, progress(1, 3)))
    node.poll(0.0)
    assert sorted(node.in_flight) == [0, 4] and node.in_flight[4][0] == 5
    node.dispatch(message(TOPICS.progress, progress(4, 5)))
    assert sorted(node.in_flight) == [4]


def test_a_forged_progress_far_ahead_holds_only_until_the_next_real_one():
    node = wired(
        DeviceNode(
            0, FakeEngine(), np.zeros((40, 2), np.float32), SETTINGS, TOPICS, batch=2, window=4
        )
    )
    node._begin()
    node.poll(0.0)
    node.poll(0.0)  # 0..3 captured, the window is full
    assert node.next_sample == 4
    node.dispatch(message(TOPICS.progress, progress(10**6, 10**6)))
    for _ in range(20):  # no flow control while the forged position holds ...
        node.poll(0.0)
    assert node.next_sample == 40
    assert max(last for last, _ in node.in_flight.values()) == 39
    assert min(node.in_flight) >= 40 - 2 - 4  # ... but what is in flight stays bounded
    # the aggregator's next message wins: resends count from there
    node.dispatch(message(TOPICS.progress, progress(3, 5)))
    assert node.decided == 3 and node.counters["progress_went_back"] == 1


def test_a_device_sends_features_only_when_asked_and_only_its_own():
    node = wired(DeviceNode(1, FakeEngine(), np.zeros((4, 2), np.float32), SETTINGS, TOPICS))
    node._begin()
    node.poll(0.0)
    # ASKS by hand: head 0x26, 1 mask byte, 4 samples; (gap, mask): 0 {0,2}, 1 {1}, 2 {1,3},
    # 99 {1} (gap 96)
    asks = bytes([0x26, 0x01, 0x04, 0x00, 0b101, 0x00, 0b10, 0x00, 0b1010, 96, 0b10])
    node.dispatch(message(TOPICS.request, asks))
    (frame,) = node.client.on(TOPICS.device_features(1))  # samples 1 and 2: one batched frame
    # head 0x24, sender 1, first 1, count 2, model tag 7 (2 B), then 2 rows of 1 packed byte
    assert frame == bytes([0x24, 1, 1, 2, 7, 0, 0, 0])
    # samples 0 and 3, not consecutive: still one frame, FEATURES_IDS with the gap (3 - 0 - 1)
    node.dispatch(message(TOPICS.request, bytes([0x26, 0x01, 0x02, 0x00, 0b10, 0x02, 0b10])))
    assert node.client.on(TOPICS.device_features(1))[1] == bytes([0x27, 1, 0, 2, 7, 0, 2, 0, 0])
    assert node.counters["features_expired"] == 1  # 99 was never captured (counted, not fatal)
    node.dispatch(message(TOPICS.request, b'[[0, ["a", 10000000]]]'))  # JSON of before
    node.dispatch(message(TOPICS.request, asks[:-1]))
    assert node.counters["rejected_version"] == 1 and node.counters["rejected_truncated"] == 1
    assert len(node.client.on(TOPICS.device_features(1))) == 2


# -- the result collector ---------------------------------------------------------------------------


def collector(samples: int = 4) -> ResultCollector:
    c = ResultCollector(None, TOPICS, samples=samples)
    c.clock = Clock()
    return c


def answer_msg(*samples: int, error: str = "") -> SimpleNamespace:
    doc = [
        {
            "sample": s,
            "prediction": -1 if error else 0,
            "exit": "none" if error else "local",
            "present": [],
            "error": error,
        }
        for s in samples
    ]
    return message(TOPICS.results, json.dumps(doc).encode())


def test_the_collector_counts_only_the_ids_it_asked_for():
    c = collector(4)
    assert c.handle(answer_msg(0, 1, 10**6, 4)) == 2
    assert c.foreign == 2 and sorted(c.answers) == [0, 1]
    assert c.handle(answer_msg(2, error="lost")) == 1
    c.handle(answer_msg(3))
    assert c.collect(4, ["device_0"], grace=3.0, timeout=60.0) == ""
    report = c.report(4, None, ("local", "cloud"), 1.0)
    assert report.failed == {2: "lost"} and len(report.answers) == 3


def test_the_collector_stops_soon_after_the_aggregator_goes_offline():
    c = collector(4)
    c.handle(answer_msg(0))
    c.handle(message(TOPICS.status("aggregator"), b"offline"))
    c.clock.t += 3.5  # Last Will 3.5 s ago, grace 3 s

    reason = c.collect(4, ["device_0"], grace=3.0, timeout=600.0)
    assert reason.startswith("aggregator offline")
    report = c.report(4, None, ("local",), 1.0, reason)
    assert sorted(report.failed) == [1, 2, 3]
    assert all(r.startswith("aggregator offline") for r in report.failed.values())


def test_an_aggregator_that_comes_back_is_waited_for():
    c = collector(1)
    c.handle(message(TOPICS.status("aggregator"), b"offline"))
    c.handle(message(TOPICS.status("aggregator"), b"online"))
    c.clock.t += 100.0
    c.inbox.put(answer_msg(0))
    assert c.collect(1, ["device_0"], grace=3.0, timeout=600.0) == ""


# -- identity ------------------------------------------------------------------------------------


def own_status(node, instance: str, payload: bytes = b"online") -> SimpleNamespace:
    props = SimpleNamespace(UserProperty=[("instance", instance)])
    return SimpleNamespace(topic=TOPICS.status(node.name), payload=payload, qos=1, properties=props)


@pytest.mark.parametrize(
    "offset_s, rest, fenced",
    [
        (-1.0, "ffffffff", False),  # an older instance (a stale retained status)
        (1.0, "00000000", True),  # a newer one: it serves the node now
        (9.0, "00000000", True),  # newer, on a host whose clock runs 9 s ahead
        (11.0, "00000000", False),  # "started" beyond any plausible clock skew: forged
        (3600.0, "00000000", False),
    ],
)
def test_only_a_plausibly_newer_instance_fences_a_node(run_c, offset_s, rest, fenced):
    node = wired(AggregatorNode(run_c, SETTINGS, TOPICS, deadline=0.5))
    mine = int(node.instance.partition("-")[0])
    node.wall = Clock(mine / 1e9)  # the wall clock reads this instance's start time
    other = f"{mine + int(offset_s * 1e9):020d}-{rest}"
    node.client.disconnect = lambda: None
    node.dispatch(own_status(node, other))
    assert bool(node.fenced) == fenced and node.stopping == fenced
    if fenced:
        assert other in node.fenced
    else:
        assert node.counters["rejected_implausible_instance"] == (offset_s > 10)


@pytest.mark.parametrize("forged", ["~forged", "9-x", "1" * 21, "abcdefghijklmnopqrst-1", ""])
def test_an_instance_that_is_not_a_start_time_is_rejected(run_c, forged):
    node = wired(AggregatorNode(run_c, SETTINGS, TOPICS, deadline=0.5))
    node.dispatch(own_status(node, forged))
    assert not node.fenced and node.counters["rejected_implausible_instance"] == 1


def test_a_backlog_is_handled_in_turns_without_dropping_a_message():
    """More queued messages than one step handles: every one is handled, in order, and the
    node ticks between turns (a message taken from the queue must never be left unhandled)."""
    from ddnn.runtime.node import MAX_PER_STEP, Node

    class Recorder(Node):
        def __init__(self) -> None:
            super().__init__("edge_0", SETTINGS, TOPICS, model_version=1)
            self.seen: list[int] = []
            self.ticks: list[int] = []

        def handle(self, msg) -> None:
            self.seen.append(int(msg.payload))

        def tick(self, now: float) -> None:
            self.ticks.append(len(self.seen))

    node = Recorder()
    n = 2 * MAX_PER_STEP + 7
    for i in range(n):
        node.inbox.put(message(TOPICS.up, str(i).encode()))
    for _ in range(3):
        node.step(0.0)
    assert node.seen == list(range(n))
    assert node.ticks == [MAX_PER_STEP, 2 * MAX_PER_STEP, n]
