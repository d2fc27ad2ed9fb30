"""The runtime's CPU savings keep behaviour: paho's shared property tables, publish-side byte
accounting without parsing, dense score slots, batch cache entries, prepared replay inputs."""

from __future__ import annotations

import gc
from collections import Counter

import numpy as np
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from test_node_logic import SETTINGS, TOPICS, FakeEngine, message, wired

from ddnn.runtime import node as node_module
from ddnn.runtime.aggregator_node import AggregatorNode
from ddnn.runtime.device_node import DeviceNode
from ddnn.runtime.feature_cache import FeatureCache
from ddnn.runtime.mqtt import LeanProperties, LeanReasonCode, lean_paho, properties_len
from ddnn.runtime.node import settle_memory
from ddnn.runtime.score_slots import ScoreSlots
from ddnn.wire import encode_varint, read_header

# -- paho ------------------------------------------------------------------------------------------


def test_lean_properties_read_and_write_what_paho_does():
    assert lean_paho() and lean_paho()  # installed, and idempotent
    from paho.mqtt import _packet

    assert _packet.Properties is LeanProperties and _packet.ReasonCode is LeanReasonCode
    for props in (LeanProperties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBLISH)):
        assert props.isEmpty() and props.pack() == b"\x00" and properties_len(props) == 1
    lean, fat = LeanProperties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBLISH)
    for p in (lean, fat):
        p.UserProperty = [("instance", "0001-ab")]
        p.MessageExpiryInterval = 30
    assert lean.pack() == fat.pack() and str(lean) == str(fat) and lean.json() == fat.json()
    assert not lean.isEmpty() and properties_len(lean) == len(fat.pack())
    back = LeanProperties(PacketTypes.PUBLISH)
    back.unpack(fat.pack())
    assert back.UserProperty == [("instance", "0001-ab")] and back.MessageExpiryInterval == 30
    back.clear()
    assert back.isEmpty() and not hasattr(back, "UserProperty")
    with pytest.raises(Exception, match="Property name"):
        back.NoSuchProperty = 1  # paho's checks still apply


def test_lean_reason_codes_equal_paho_s():
    for packet in (PacketTypes.PUBACK, PacketTypes.PUBCOMP, PacketTypes.DISCONNECT):
        lean, fat = LeanReasonCode(packet), ReasonCode(packet)
        assert lean == fat and lean.value == fat.value and lean.getName() == fat.getName()
        assert str(lean) == str(fat) and not lean.is_failure
    odd = LeanReasonCode(PacketTypes.PUBACK, identifier=16)
    assert odd.getName() == "No matching subscribers" and odd == ReasonCode(
        PacketTypes.PUBACK, identifier=16
    )


def test_the_aggregator_does_not_get_its_own_answers_back(run_c, monkeypatch):
    seen = {}

    def fake_connect(client_id, settings, on_message, subscriptions, **_kw):
        seen.update(subscriptions)
        return None

    monkeypatch.setattr(node_module, "connect_client", fake_connect)
    AggregatorNode(run_c, SETTINGS, TOPICS).connect()
    options = seen[TOPICS.results]
    assert isinstance(options, SubscribeOptions) and options.noLocal and options.QoS == 1
    assert seen[TOPICS.progress] == 1  # its own retained progress: needed on a restart


def test_settle_memory_freezes_what_is_loaded():
    try:
        settle_memory()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


# -- byte accounting on the sending side --------------------------------------------------------


def test_a_device_books_its_frames_true_headers_without_parsing_them():
    node = wired(
        DeviceNode(1, FakeEngine(), np.zeros((40, 2), np.float32), SETTINGS, TOPICS, batch=4)
    )
    node._begin()
    node.poll(0.0)  # samples 0..3: one SCORES frame
    # ASKS by hand: head 0x26, 1 mask byte, 2 samples: 0 {1}, then 2 (gap 1) {1}
    asks = bytes([0x26]) + encode_varint(1) + encode_varint(2) + bytes([0, 0b10, 1, 0b10])
    node.dispatch(message(TOPICS.request, asks))  # a FEATURES_IDS frame (ids 0, 2)
    frames = [p for t, p in node.client.sent if t.endswith(("/s", "/f"))]
    assert len(frames) == 2
    scores, features = node.metrics.wire["scores"], node.metrics.wire["features"]
    assert scores[1] == read_header(frames[0]).header_len
    assert scores[0] == len(frames[0]) - scores[1] == 4 * 12  # 4 rows of 3 float32
    assert features[1] == read_header(frames[1]).header_len and features[0] == 2 * 1


def test_publish_takes_any_payload_and_books_the_header_it_is_told():
    n = node_module.Node("x", SETTINGS, TOPICS, model_version=1)
    n.client = type("C", (), {"publish": lambda *a, **k: None})()
    n.publish(TOPICS.device_scores(0), b"not a frame at all", qos=1, header=5)
    assert n.metrics.wire["scores"][:2] == [13, 5]


# -- state kept compactly -------------------------------------------------------------------------


def test_score_slots_gather_with_zeros_where_absent_and_are_reused():
    slots = ScoreSlots(num_inputs=3, num_classes=2, capacity=2)
    a, b = slots.take(), slots.take()
    c = slots.take()  # grows
    assert len({a, b, c}) == 3 and len(slots.scores) == 4
    slots.put([a, c], 1, np.array([[1, 2], [3, 4]], np.float32))
    slots.put([a], 2, np.array([[5, 6]], np.float32))
    scores, present = slots.gather([c, a])
    np.testing.assert_array_equal(scores, [[[0, 0], [3, 4], [0, 0]], [[0, 0], [1, 2], [5, 6]]])
    np.testing.assert_array_equal(present, [[False, True, False], [False, True, True]])
    again = slots.take()
    assert again in (a, c)
    scores, present = slots.gather([again])
    assert not scores.any() and not present.any()  # a reused slot starts empty


def test_feature_cache_put_many_keeps_one_entry_per_sample():
    counters: Counter[str] = Counter()
    cache: FeatureCache[tuple[str, int]] = FeatureCache(ttl=10.0, counters=counters, max_entries=3)
    cache.put_many(range(5, 9), ("batch", 5), now=1.0)  # 4 entries, over the bound of 3
    assert len(cache) == 4
    assert cache.take(6) == ("batch", 5) and cache.take(6) is None
    cache.evict(now=2.0)
    assert len(cache) == 3 and counters["features_expired"] == 1
    cache.evict(now=12.0)  # all older than the TTL
    assert len(cache) == 0 and counters["features_evicted"] == 3


# -- prepared replay inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["torch", "c"])
def test_prepared_inputs_give_what_raw_inputs_give(run_c, kind):
    from ddnn.data.registry import load_dataset
    from ddnn.runtime.deploy import read_run_config
    from ddnn.runtime.engine import create_engine, prepare_inputs, prepared_inference

    if kind == "c":
        from ddnn.export.build import find_compiler

        try:
            find_compiler()
        except Exception:  # noqa: BLE001 - no C compiler here
            pytest.skip("no C compiler")
    engine = create_engine(kind, run_c, 1)
    x = load_dataset(read_run_config(run_c).data).test.device_input(1)[:7].numpy()
    prepared = prepare_inputs(engine, x)
    if kind == "c":
        assert prepared.dtype == np.uint8  # quantized once, checked once
    for got, want in zip(prepared_inference(engine)(prepared), engine.infer_batch(x), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_replay_off_the_pixel_grid_is_refused_when_the_device_starts(run_c):
    from ddnn.export.build import find_compiler
    from ddnn.runtime.engine import create_engine

    try:
        find_compiler()
    except Exception:  # noqa: BLE001 - no C compiler here
        pytest.skip("no C compiler")
    engine = create_engine("c", run_c, 0)
    bad = np.full((3, *engine.input_shape), 0.5, dtype=np.float32)  # 127.5 / 255
    with pytest.raises(ValueError, match="8-bit pixel"):
        DeviceNode(0, engine, bad, SETTINGS, TOPICS)
