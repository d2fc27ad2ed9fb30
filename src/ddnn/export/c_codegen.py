"""Writes a folded device section as dependency-free C99: one header and one source per device.

Layout choices, for a microcontroller with a few KB of RAM:

- constant data (``static const``, i.e. flash) holds the weights as sign bits, one integer
  threshold and one direction bit per channel, and two float32 per class for the exit head;
- activations between layers are one bit per channel, the channels of a pixel packed into one
  word (``uint8_t``/``uint16_t``/``uint32_t``), each row padded by a zero word at both ends, so a
  binary conv tap is ``C - 2 * popcount(w ^ x)`` (XNOR + popcount) over whole rows;
- every layer streams its conv output one row at a time and max-pools it on the fly, keeping one
  hit bit per channel and column (``c_layers``), so no full-resolution map is ever stored; the
  first layer trades about 2.3 KB of RAM (three input rows of shared sign patterns) for three
  times fewer additions;
- the last layer writes its bits straight into the caller's buffer in the codec's wire layout
  (C-order (C, H, W), MSB first), and the exit head reads that same buffer.

No dynamic allocation; buffers are automatic (stack) arrays so the function is reentrant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ddnn.export import c_layers
from ddnn.export.c_layers import SIZES, LayerPlan
from ddnn.wire import ScoreEncoding, feature_payload_bytes, score_payload_bytes

if TYPE_CHECKING:  # torch-free at run time: the C engine imports this without torch
    from ddnn.export.fold import FoldedDevice

GENERATOR_VERSION = 1  # bump whenever the generated C changes, so cached builds are redone

_INT16 = (-(2**15), 2**15 - 1)
_WORDS = ((8, "uint8_t"), (16, "uint16_t"), (32, "uint32_t"))


@dataclass(frozen=True)
class Footprint:
    """Memory a device section needs, in bytes.

    Attributes:
        const_bytes: constant data (weights, thresholds, direction bits, head affine): flash.
        ram_bytes: working RAM inside ``infer``: activation buffers between layers plus the
            largest layer's own buffers (not counting the caller's input and output buffers).
        input_bytes: the caller's 8-bit input image.
        feature_bytes: packed feature map, the FEATURES payload on the wire.
        score_bytes: the float32 class scores the C function writes, the SCORES payload in
            float32 (a ``model.wire.scores`` of float16 or int8 sends 2 or 1 B per class).
    """

    const_bytes: int
    ram_bytes: int
    input_bytes: int
    feature_bytes: int
    score_bytes: int

    @property
    def wire_bytes(self) -> int:
        """Payload bytes per sample when the sample does not exit locally (scores + features)."""
        return self.feature_bytes + self.score_bytes


@dataclass(frozen=True)
class CSource:
    """Generated C for one device: ``<name>.h`` and ``<name>.c``."""

    name: str
    header: str
    source: str
    footprint: Footprint
    infer_symbol: str


def _word(channels: int) -> tuple[str, int]:
    """The packed-channel word for ``channels`` bits and how many words a pixel takes."""
    for bits, name in _WORDS:
        if channels <= bits:
            return name, 1
    return "uint32_t", math.ceil(channels / 32)


def _plans(folded: FoldedDevice) -> list[LayerPlan]:
    plans = []
    for i, layer in enumerate(folded.layers):
        lo, hi = layer.value_range
        acc = "int16_t" if _INT16[0] < lo and hi <= _INT16[1] else "int32_t"  # > sentinel
        in_word, in_words = ("uint8_t", 1) if layer.real_input else _word(layer.in_shape[0])
        word, words = _word(layer.out_shape[0])
        last = i == len(folded.layers) - 1
        plans.append(LayerPlan(i, layer, acc, in_word, in_words, word, words, last))
    return plans


def _weight_bytes(p: LayerPlan) -> int:
    f, c, _, _ = p.layer.weight_signs.shape
    if p.layer.real_input:
        return math.ceil(f * c * 9 / 8)
    return f * 9 * p.in_words * SIZES[p.in_word]


def _layer_const_bytes(p: LayerPlan) -> tuple[int, int, int]:
    """(weights, thresholds, direction words) bytes of one layer."""
    f = p.layer.out_shape[0]
    return _weight_bytes(p), f * SIZES[p.acc], p.words * SIZES[p.word]


def _array(ctype: str, name: str, values: list[str], comment: str) -> str:
    rows = [", ".join(values[i : i + 12]) for i in range(0, len(values), 12)]
    body = ",\n    ".join(rows)
    return f"/* {comment} */\nstatic const {ctype} {name}[{len(values)}] = {{\n    {body}\n}};\n"


def _hex(values: np.ndarray, digits: int) -> list[str]:
    return [f"0x{int(v):0{digits}X}" for v in values.reshape(-1)]


def _channel_words(flags: np.ndarray, word: str, nwords: int) -> np.ndarray:
    """(..., C) bool -> (..., nwords) words: bit c % bits of word c // bits is channel c."""
    bits = 8 * SIZES[word]
    out = np.zeros((*flags.shape[:-1], nwords), dtype=np.uint64)
    for ch in range(flags.shape[-1]):
        out[..., ch // bits] |= flags[..., ch].astype(np.uint64) << np.uint64(ch % bits)
    return out


def _layer_data(p: LayerPlan) -> str:
    layer = p.layer
    f, c, _, _ = layer.weight_signs.shape
    if layer.real_input:
        weights = _array(
            "uint8_t",
            f"l{p.index}_weights",
            _hex(np.packbits(layer.weight_signs.reshape(-1)), 2),
            f"sign bits of the {f}x{c}x3x3 weights, (filter, channel, row, col) order, MSB first, "
            "1 = +1",
        )
    else:
        taps = np.moveaxis(layer.weight_signs, 1, -1)  # (F, 3, 3, C)
        weights = _array(
            p.in_word,
            f"l{p.index}_weights",
            _hex(_channel_words(taps, p.in_word, p.in_words), 2 * SIZES[p.in_word]),
            "one word per (filter, row, col) tap: bit c is input channel c, 1 = +1",
        )
    thresholds = _array(
        p.acc,
        f"l{p.index}_thresholds",
        [str(int(v)) for v in layer.thresholds],
        "per channel: a pooled conv sum >= this is a hit",
    )
    falling = _array(
        p.word,
        f"l{p.index}_falling",
        _hex(_channel_words(~layer.rising[None], p.word, p.words), 2 * SIZES[p.word]),
        "bit o: channel o outputs +1 when there is *no* hit (negative BatchNorm scale)",
    )
    return weights + thresholds + falling


def _float(v: float) -> str:
    return float(np.float32(v)).hex() + "f"


def _head_data(folded: FoldedDevice) -> str:
    nc = folded.num_classes
    nf = math.prod(folded.feature_shape)
    packed = np.stack([np.packbits(row) for row in folded.head.weight_signs])  # (nc, bytes)
    return (
        _array(
            "uint8_t",
            "head_weights",
            _hex(packed, 2),
            f"sign bits of the {nc}x{nf} head weights, each class in the wire feature layout",
        )
        + _array("float", "head_scale", [_float(v) for v in folded.head.scale], "BatchNorm scale")
        + _array("float", "head_shift", [_float(v) for v in folded.head.shift], "BatchNorm shift")
    )


def _footprint_comment(folded: FoldedDevice, fp: Footprint, plans: list[LayerPlan]) -> str:
    c, h, w = folded.input_shape
    fc, fh, fw = folded.feature_shape
    lines = [
        f"Input: {c}x{h}x{w} uint8 pixels (value k stands for k/255), {fp.input_bytes} bytes.",
        f"Features: {fc}x{fh}x{fw} bits, {fp.feature_bytes} bytes in the codec's wire layout.",
        f"Scores: {folded.num_classes} float32, {fp.score_bytes} bytes.",
        "",
        "Footprint:",
        f"  constant data (flash): {fp.const_bytes} bytes",
    ]
    for p in plans:
        weights, thresholds, directions = _layer_const_bytes(p)
        lines.append(
            f"    layer {p.index}: {weights} B weights + {thresholds} B thresholds "
            f"+ {directions} B directions"
        )
    head = fp.const_bytes - sum(sum(_layer_const_bytes(p)) for p in plans)
    lines += [
        f"    exit head: {head} B (weight sign bits + 2 float32 per class)",
        f"  working RAM (stack): {fp.ram_bytes} bytes: activations between layers plus the",
        "    largest layer's row buffers; the caller's input and output buffers not counted",
        f"  wire bytes per sample: {fp.feature_bytes} (features) + {fp.score_bytes} (scores) "
        f"= {fp.wire_bytes}, plus frame headers",
        "",
    ]
    ties = folded.ties
    if ties:
        lines.append("Float ties (pooled sums where PyTorch's own decision depends on rounding):")
        lines += [f"  layer {t.layer} channel {t.channel} sum {t.value}: {t.reason}" for t in ties]
    else:
        lines.append("Float ties: none; every feature bit is PyTorch's float32 decision.")
    return "\n".join(" * " + line if line else " *" for line in lines)


def footprint(folded: FoldedDevice) -> Footprint:
    """Bytes of constant data, working RAM and wire payload of the generated code."""
    plans = _plans(folded)
    nc = folded.num_classes
    feature_bytes = feature_payload_bytes(folded.feature_shape)
    const = sum(sum(_layer_const_bytes(p)) for p in plans) + feature_bytes * nc + 8 * nc
    buffers = sum(p.buffer_len * SIZES[p.word] for p in plans)
    return Footprint(
        const_bytes=const,
        ram_bytes=buffers + max(p.scratch_bytes for p in plans),
        input_bytes=math.prod(folded.input_shape),
        feature_bytes=feature_bytes,
        score_bytes=score_payload_bytes(nc, ScoreEncoding.FLOAT32),
    )


def _header(folded: FoldedDevice, device: int, model_version: int, banner: str) -> str:
    fp = footprint(folded)
    macro = f"DDNN_DEVICE_{device}"
    c, h, w = folded.input_shape
    fc, fh, fw = folded.feature_shape
    nc = folded.num_classes
    return f"""\
{banner}
#ifndef {macro}_H
#define {macro}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#ifndef DDNN_OK
#define DDNN_OK 0                   /* success */
#define DDNN_ERR_NULL_ARGUMENT (-1) /* a pointer argument was NULL */
#endif

#define {macro}_MODEL_VERSION 0x{model_version:08X}u
#define {macro}_NUM_CLASSES {nc}
#define {macro}_INPUT_CHANNELS {c}
#define {macro}_INPUT_HEIGHT {h}
#define {macro}_INPUT_WIDTH {w}
#define {macro}_INPUT_BYTES {fp.input_bytes}
#define {macro}_FEATURE_CHANNELS {fc}
#define {macro}_FEATURE_HEIGHT {fh}
#define {macro}_FEATURE_WIDTH {fw}
#define {macro}_FEATURE_BYTES {fp.feature_bytes}
#define {macro}_CONST_BYTES {fp.const_bytes}
#define {macro}_RAM_BYTES {fp.ram_bytes}

/* Runs the device section on one image.
 *
 * input: {macro}_INPUT_BYTES pixels in C order ({c}, {h}, {w}); pixel k stands for k/255.
 * scores: receives the {nc} class scores for the local aggregator.
 * packed_features: receives {macro}_FEATURE_BYTES bytes: the +-1 feature map bit-packed in
 *     the frame codec's wire layout (C order, MSB first, +1 -> 1, zero padding bits).
 * The three buffers must not overlap. No allocation; reentrant (buffers live on the stack).
 * Returns DDNN_OK, or DDNN_ERR_NULL_ARGUMENT if a pointer is NULL.
 */
int ddnn_device_{device}_infer(const uint8_t *input, float scores[{macro}_NUM_CLASSES],
    uint8_t *packed_features);

#ifdef __cplusplus
}}
#endif

#endif /* {macro}_H */
"""


def _infer(plans: list[LayerPlan], device: int) -> str:
    macro = f"DDNN_DEVICE_{device}"
    buffers = [p for p in plans if not p.last]
    decls = "".join(
        f"    {p.word} act{p.index}[{p.buffer_len}]; /* layer {p.index} output, padded rows */\n"
        for p in buffers
    )
    clears = "".join(f"    memset(act{p.index}, 0, sizeof act{p.index});\n" for p in buffers)
    calls = "".join(
        f"    l{p.index}_run({'input' if p.index == 0 else f'act{p.index - 1}'}, "
        f"{'packed_features' if p.last else f'act{p.index}'});\n"
        for p in plans
    )
    return f"""\
int ddnn_device_{device}_infer(const uint8_t *input, float scores[{macro}_NUM_CLASSES],
    uint8_t *packed_features)
{{
{decls}    if (input == NULL || scores == NULL || packed_features == NULL) return DDNN_ERR_NULL_ARGUMENT;
{clears}    memset(packed_features, 0, {macro}_FEATURE_BYTES);
{calls}    head(packed_features, scores);
    return DDNN_OK;
}}
"""


def generate_c(folded: FoldedDevice, device: int, model_version: int, origin: str = "") -> CSource:
    """C99 header and source for device ``device``; public names start with ``ddnn_device_<K>_``.

    Args:
        folded: The folded device section.
        device: Device index K, used in every public name.
        model_version: The run's model version, stamped in the header.
        origin: Where the model came from (a run directory), for the generated comment.
    """
    plans = _plans(folded)
    name = f"ddnn_device_{device}"
    shapes = " -> ".join(
        ["x".join(map(str, folded.input_shape))]
        + [f"ConvP({p.layer.out_shape[0]}) " + "x".join(map(str, p.layer.out_shape)) for p in plans]
    )
    banner = (
        f"/*\n * DDNN device {device} section, generated by `ddnn export c`"
        + (f" from {origin}" if origin else "")
        + f".\n * Model version 0x{model_version:08X}: {shapes} -> "
        + f"{folded.num_classes} class scores.\n *\n"
        + _footprint_comment(folded, footprint(folded), plans)
        + "\n */\n"
    )
    words = {"uint8_t"} | {p.in_word for p in plans if not p.layer.real_input}
    parts = [
        banner,
        f'#include "{name}.h"\n\n#include <stdint.h>\n#include <string.h>\n\n',
        c_layers.BIT_C,
    ]
    parts += [
        "\n" + c_layers.POPCOUNT_C[w] for w in ("uint8_t", "uint16_t", "uint32_t") if w in words
    ]
    for p in plans:
        kind = "8-bit input" if p.layer.real_input else "binary input"
        parts.append(
            f"\n/* ---- layer {p.index}: ConvP "
            + " -> ".join("x".join(map(str, s)) for s in (p.layer.in_shape, p.layer.out_shape))
            + f" ({kind}), integer only ---- */\n\n"
        )
        conv = c_layers.real_conv(p) if p.layer.real_input else c_layers.binary_conv_row(p)
        parts += [_layer_data(p), "\n", conv, "\n", c_layers.hits(p), "\n", c_layers.emit(p)]
        parts += ["\n", c_layers.run(p)]
    nf = math.prod(folded.feature_shape)
    parts += [
        "\n/* ---- exit head: the only floating point is the final BatchNorm ---- */\n\n",
        _head_data(folded),
        "\n",
        c_layers.head(folded.num_classes, nf, folded.head.fused),
        "\n",
        _infer(plans, device),
    ]
    return CSource(
        name=name,
        header=_header(folded, device, model_version, banner),
        source="".join(parts),
        footprint=footprint(folded),
        infer_symbol=f"{name}_infer",
    )
