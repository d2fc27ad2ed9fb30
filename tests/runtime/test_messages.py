"""Every parser of a message a node receives: hand-written hostile cases, round trips, and fuzzing.

The contract: a parser returns a valid value or raises ``MessageError`` — never any other
exception, whatever the bytes. (Frames are fuzzed the same way in ``tests/wire``.)
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddnn.runtime import messages as m

PARSERS = [
    m.parse_control,
    m.parse_status,
    m.parse_progress,
    m.parse_feature_asks,
    m.parse_requests,
    m.parse_receipts,
    m.parse_answers,
    m.parse_answer_samples,
]


def must_reject(parser, payload: bytes) -> None:
    with pytest.raises(m.MessageError):
        parser(payload)


# -- the cases seen in the field -------------------------------------------------------------------


@pytest.mark.parametrize("parser", PARSERS)
def test_deep_nesting_is_refused_not_a_recursion_error(parser):
    must_reject(parser, b"[" * 100_000)


@pytest.mark.parametrize(
    "parser, payload",
    [
        (m.parse_feature_asks, b"[[Infinity, [0]]]"),  # the JSON of before: refused
        (m.parse_feature_asks, bytes([0x26, 0x01, 0x01, 0x00, 0x00])),  # asks no device
        (m.parse_feature_asks, bytes([0x26, 0x01, 0x02, 0x00, 0x01])),  # one of two asks
        (m.parse_feature_asks, bytes([0x26, 0x01, 0x01]) + b"\xff" * 7 + b"\x7f\x01"),  # 2**56
        (m.parse_progress, b'{"decided": 1, "latest": 2}'),  # the JSON of before: refused
        (m.parse_progress, bytes([0x25, 0x01])),
        (m.parse_progress, bytes([0x25, 0x01, 0x01, 0x01])),
        (m.parse_progress, bytes([0x26, 0x01, 0x01, 0x00, 0x01])),  # an ASKS, not a PROGRESS
        (m.parse_receipts, b"[1, 2]"),
        (m.parse_receipts, b'{"x": {"payload": {}, "mqtt": {}, "flags": []}}'),
        (m.parse_receipts, b'{"1": {"payload": {"0": -5}, "mqtt": {}, "flags": []}}'),
        (m.parse_answers, b'{"sample": 1}'),
        (m.parse_answer_samples, b'[{"sample": -1}]'),
        (m.parse_answer_samples, b'[{"prediction": 1}]'),
        (m.parse_answer_samples, b"[[1]]"),
        (m.parse_answers, b'[{"sample": 1, "prediction": 0, "exit": "moon", "present": []}]'),
        (m.parse_answers, b'[{"sample": 1, "prediction": -1, "exit": "local", "present": []}]'),
        (
            m.parse_answers,
            b'[{"sample": 1, "prediction": 0, "exit": "local", "present": [], "captured": 1e999}]',
        ),
        (
            m.parse_answers,
            b'[{"sample": 1, "prediction": 0, "exit": "local", "present": [], "flags": ['
            + b'"x",' * 40
            + b'"x"]}]',
        ),
        (m.parse_requests, b'[{"sample": 1}]'),
        (m.parse_requests, b"\xff\xfe"),
        (m.parse_control, b"start nan"),
        (m.parse_control, b"start inf"),
        (m.parse_control, b"start -inf"),
        (m.parse_control, b"start 1e999"),
        (m.parse_control, b"start 1 2"),
        (m.parse_control, b"stop now"),
        (m.parse_control, b"x" * 10_000),
        (m.parse_status, b"online\x00"),
    ],
)
def test_hostile_payloads_are_refused(parser, payload):
    must_reject(parser, payload)


def test_oversized_messages_are_refused_before_parsing():
    payload = b"[" + b"0," * (m.MAX_MESSAGE_BYTES // 2) + b"0]"
    with pytest.raises(m.MessageError) as info:
        m.parse_requests(payload)
    assert info.value.reason == "oversized"
    with pytest.raises(m.MessageError) as info:
        m.parse_feature_asks(bytes([0x26]) + bytes(m.MAX_MESSAGE_BYTES))
    assert info.value.reason == "oversized"


def test_control_and_status_accept_exactly_the_documented_forms():
    assert m.parse_control(b"stop") == m.Control("stop")
    assert m.parse_control(b"start") == m.Control("start")
    assert m.parse_control(b"start 1700000000.5") == m.Control("start", 1700000000.5)
    assert [m.parse_status(s) for s in (b"online", b"offline", b"done")] == [
        "online",
        "offline",
        "done",
    ]


# -- round trips --------------------------------------------------------------------------------------

counts = st.dictionaries(st.integers(0, 65535).map(str), st.integers(0, 2**31 - 1), max_size=6)
ids = st.lists(st.integers(0, 65535), unique=True, max_size=8).map(sorted)
shares = st.dictionaries(
    st.integers(0, 65535).map(str), st.floats(0, 2.0**31, allow_nan=False), max_size=6
)
samples = st.integers(0, m.MAX_SAMPLE_ID)
flags = st.lists(st.text(max_size=40), max_size=4)
times = st.floats(0, 4e9, allow_nan=False)


@given(
    st.dictionaries(samples, ids.filter(bool), min_size=1, max_size=20),
    st.integers(0, 65535),
)
def test_feature_asks_round_trip(asks, device):
    payload = m.encode_feature_asks(list(asks.items()))
    assert m.parse_feature_asks(payload) == sorted(asks.items())
    assert m.samples_asked_of(payload, device) == sorted(s for s, d in asks.items() if device in d)


@given(samples, samples)
def test_progress_round_trips(a, b):
    p = m.Progress(min(a, b), max(a, b))
    assert m.parse_progress(m.encode_progress(p)) == p


@given(
    st.builds(
        m.UpRequest,
        sample=samples,
        present=ids,
        device_payload=counts,
        device_header=shares,
        device_mqtt=shares,
        captured=times,
        local_prediction=st.integers(0, 9),
        edge_prediction=st.integers(-1, 9),
        edges=ids,
        edge_payload=counts,
        flags=flags,
    )
)
def test_up_requests_round_trip(req):
    assert m.parse_requests(m.encode_requests([req])) == [req]


@given(
    st.builds(
        m.Answer,
        sample=samples,
        prediction=st.integers(0, 9),
        exit=st.sampled_from(["local", "edge", "cloud"]),
        present=ids,
        device_payload=counts,
        captured=times,
        answered=times,
        flags=flags,
    )
)
def test_answers_round_trip(answer):
    assert m.parse_answers(m.encode_answers([answer])) == [answer]


def test_a_failure_round_trips_with_its_reason():
    f = m.failure(7, "lost in transit", 1.0, "no_frames")
    (back,) = m.parse_answers(m.encode_answers([f]))
    assert back.failed and back.error == "lost in transit" and back.prediction == -1
    assert back.flags == ["no_frames"]  # the reason code metrics count failures by


@given(
    st.dictionaries(
        samples,
        st.builds(m.Receipt, payload=counts, header=shares, mqtt=shares, flags=flags),
        max_size=5,
    )
)
def test_receipts_round_trip(receipts):
    assert m.parse_receipts(m.encode_receipts(receipts)) == receipts


# -- fuzzing -------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PARSERS), st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused(parser, payload):
    try:
        parser(payload)
    except m.MessageError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PARSERS), json_values)
def test_any_json_document_is_parsed_or_refused(parser, doc):
    try:
        result = parser(json.dumps(doc).encode())
    except m.MessageError:
        return
    # what passes holds only finite numbers
    for value in _numbers(result):
        assert math.isfinite(value)


def _numbers(value):
    if isinstance(value, int | float) and not isinstance(value, bool):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _numbers(getattr(value, name))


def test_answer_samples_are_read_without_building_the_answers():
    answers = [m.Answer(7, 1, "cloud", [0, 1]), m.failure(9, "lost", 1.7e9, "no_frames")]
    assert m.parse_answer_samples(m.encode_answers(answers)) == [7, 9]
