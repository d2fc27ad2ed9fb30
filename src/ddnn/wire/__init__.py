"""Every byte on the wire: frame format v2, payload encodings, batched frames and byte accounting.

Modules: :mod:`~ddnn.wire.frame` (the v2 layout, encoders, header parsing),
:mod:`~ddnn.wire.decode` (what a receiver expects, checked decoding), :mod:`~ddnn.wire.scores`
(float32 / float16 / int8 score rows), :mod:`~ddnn.wire.bits` (bit-packed ±1 feature maps),
:mod:`~ddnn.wire.varint` (LEB128), :mod:`~ddnn.wire.control` (the binary PROGRESS and ASKS
control messages), :mod:`~ddnn.wire.accounting` (payload, header and MQTT bytes,
SPEC §6's formula), :mod:`~ddnn.wire.measure` (the bytes each link of a hierarchy carries per
sample, on really encoded frames) and :mod:`~ddnn.wire.errors` (:class:`FrameDecodeError` and its
reasons).

This package imports only the standard library and NumPy (torch only when given a tensor), and
none of ``ddnn``'s other packages, so every layer above can read its byte figures from here.
"""

from ddnn.wire.accounting import (
    WireBytes,
    feature_payload_bytes,
    formula_bytes_per_device,
    frame_bytes,
    frame_header_bytes,
    mqtt_fixed_header_bytes,
    mqtt_publish_overhead,
    mqtt_variable_header_bytes,
    raw_bytes_per_device,
    score_payload_bytes,
)
from ddnn.wire.bits import pack_bits, pack_bits_batch, packed_bytes, unpack_bits, unpack_bits_batch
from ddnn.wire.decode import Expect, Frame, decode_frame
from ddnn.wire.errors import REASONS, FrameDecodeError
from ddnn.wire.frame import (
    MAX_COUNT,
    MAX_SAMPLE,
    MAX_SENDER,
    VERSION,
    FrameHeader,
    FrameKind,
    capture_field,
    encode_features_frame,
    encode_features_frame_ids,
    encode_scores_frame,
    id_gaps,
    model_tag,
    read_header,
    unwrap_capture,
)
from ddnn.wire.measure import (
    FrameCounts,
    LinkBytes,
    feature_frames,
    mean_raw_bytes_per_device,
    raw_frames,
    score_frames,
)
from ddnn.wire.scores import (
    INT8_SCALE,
    ScoreEncoding,
    decode_scores,
    encode_scores,
    score_bytes,
    wire_roundtrip,
)
from ddnn.wire.varint import decode_varint, encode_varint, varint_len

__all__ = [
    "INT8_SCALE",
    "MAX_COUNT",
    "MAX_SAMPLE",
    "MAX_SENDER",
    "REASONS",
    "VERSION",
    "Expect",
    "Frame",
    "FrameDecodeError",
    "FrameCounts",
    "FrameHeader",
    "FrameKind",
    "LinkBytes",
    "ScoreEncoding",
    "WireBytes",
    "capture_field",
    "decode_frame",
    "decode_scores",
    "decode_varint",
    "encode_features_frame",
    "encode_features_frame_ids",
    "encode_scores",
    "encode_scores_frame",
    "encode_varint",
    "feature_frames",
    "feature_payload_bytes",
    "formula_bytes_per_device",
    "id_gaps",
    "frame_bytes",
    "frame_header_bytes",
    "mean_raw_bytes_per_device",
    "model_tag",
    "mqtt_fixed_header_bytes",
    "mqtt_publish_overhead",
    "mqtt_variable_header_bytes",
    "pack_bits",
    "pack_bits_batch",
    "packed_bytes",
    "raw_bytes_per_device",
    "raw_frames",
    "read_header",
    "score_bytes",
    "score_frames",
    "score_payload_bytes",
    "unpack_bits",
    "unpack_bits_batch",
    "unwrap_capture",
    "varint_len",
    "wire_roundtrip",
]
