"""C99 text of the layer functions: integer ConvP blocks streamed row by row, and the exit head.

Every layer walks its conv output one row at a time. A max-pool followed by a threshold is an OR
of per-position *hits* (``sum >= threshold``), so pooling keeps one bit per channel, packed into
one word per output column (``hits``/``pooled``/``carry``), instead of rows of integers; falling
channels (negative BatchNorm scale) are the complement of the OR, applied when a row is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at run time: the C engine imports this without torch
    from ddnn.export.fold import FoldedConvP

SIZES = {"uint8_t": 1, "uint16_t": 2, "uint32_t": 4, "int16_t": 2, "int32_t": 4}
POPCOUNT = {"uint8_t": "ddnn_pop8", "uint16_t": "ddnn_pop16", "uint32_t": "ddnn_pop32"}

POPCOUNT_C = {
    "uint8_t": """\
static int ddnn_pop8(uint8_t v)
{
    v = (uint8_t)(v - ((v >> 1) & 0x55u));
    v = (uint8_t)((v & 0x33u) + ((v >> 2) & 0x33u));
    return (v + (v >> 4)) & 0x0F;
}
""",
    "uint16_t": """\
static int ddnn_pop16(uint16_t v)
{
    v = (uint16_t)(v - ((v >> 1) & 0x5555u));
    v = (uint16_t)((v & 0x3333u) + ((v >> 2) & 0x3333u));
    v = (uint16_t)((v + (v >> 4)) & 0x0F0Fu);
    return (v + (v >> 8)) & 0x1F;
}
""",
    "uint32_t": """\
static int ddnn_pop32(uint32_t v)
{
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    v = v + (v >> 8);
    v = v + (v >> 16);
    return (int)(v & 0x3Fu);
}
""",
}

BIT_C = """\
static int ddnn_bit(const uint8_t *bits, int i)
{
    return (bits[i >> 3] >> (7 - (i & 7))) & 1;
}
"""


@dataclass(frozen=True)
class LayerPlan:
    """How one ConvP layer is laid out in C.

    Attributes:
        index: Layer number (C names start with ``l<index>_``).
        layer: The folded layer.
        acc: C type of conv sums and thresholds.
        in_word / in_words: packed-channel word of the input map and words per pixel (binary
            layers; the first layer reads ``uint8_t`` pixels).
        word / words: packed-channel word of the output channels and words per pixel.
        last: Whether the layer writes the wire-layout feature map instead of packed words.
    """

    index: int
    layer: FoldedConvP
    acc: str
    in_word: str
    in_words: int
    word: str
    words: int
    last: bool

    @property
    def bits(self) -> int:
        return 8 * SIZES[self.word]

    @property
    def buffer_len(self) -> int:
        """Words of the padded output map an intermediate layer writes (0 for the last)."""
        _, ho, wo = self.layer.out_shape
        return 0 if self.last else ho * (wo + 2) * self.words

    @property
    def scratch_bytes(self) -> int:
        """Bytes of the arrays ``l<i>_run`` and the functions it calls hold at once (scalars and
        pointers not counted)."""
        f, _, wo = self.layer.out_shape
        c, _, w = self.layer.in_shape
        pooling = 3 * wo * self.words * SIZES[self.word]  # hits, pooled, carry
        if self.layer.real_input:
            patterns = 3 * c * 4 * w * 2  # 3 input rows x channels x 4 patterns, int16
            codes = f * 3 * c
            sums = (w + 2) * SIZES[self.acc]  # with the two sentinels
            pixels = 2 * (wo + 1)  # a[], b[] of l<i>_patterns
            return patterns + codes + sums + pooling + pixels
        return w * SIZES[self.acc] + pooling


def sentinel(acc: str) -> str:
    """A sum below every threshold (thresholds are > -2**15 for int16 sums, see fold ranges)."""
    return "INT16_MIN" if acc == "int16_t" else "INT32_MIN"


def real_conv(p: LayerPlan) -> str:
    """First layer: exact integer conv sums of 8-bit pixels with ±1 weights.

    A 3-tap kernel row has one of 8 sign patterns; the 4 whose left tap is + are computed once per
    input row and channel and shared by every filter (the other 4 are their negations), so a conv
    row of one filter is a signed sum of 3 * C pattern rows instead of 9 * C shifted input rows.
    Columns are kept split, even ones then odd ones, so that every loop runs over contiguous
    memory (and vectorizes), the pooling windows included.
    """
    c, h, w = p.layer.in_shape
    f, _, wo = p.layer.out_shape
    i, acc = p.index, p.acc
    n, odd = 3 * c, w // 2
    pointers = "".join(
        f"    const int16_t *restrict t{k} = rows[{k % 3}] + ({k // 3} * 4 + (codes[{k}] & 3)) * {w};\n"
        f"    const int g{k} = ((codes[{k}] >> 1) & 2) - 1; /* sign bit 2 -> +1 or -1 */\n"
        for k in range(n)
    )

    def terms(offset: str) -> str:
        return " + ".join(f"g{k} * t{k}[{offset}x]" for k in range(n))

    return f"""\
/* pattern[(c * 4 + k) * {w} + q] of input row y: left tap +, then (mid, right) = --, -+, +-, ++;
 * q < {wo} is even column 2q, q >= {wo} odd column 2(q - {wo}) + 1. */
static void l{i}_patterns(const uint8_t *restrict in, int y, int16_t *restrict pattern)
{{
    uint8_t a[{wo} + 1], b[{wo} + 1]; /* a[k] = pixel 2k - 1, b[k] = pixel 2k, 0 outside the row */
    int c, j;
    for (c = 0; c < {c}; ++c) {{
        const uint8_t *src = in + ((long)c * {h} + y) * {w};
        int16_t *p = pattern + c * 4 * {w};
        a[0] = 0;
        a[{wo}] = 0;
        b[{wo}] = 0;
        for (j = 0; j < {odd}; ++j) a[j + 1] = src[2 * j + 1];
        for (j = 0; j < {wo}; ++j) b[j] = src[2 * j];
        for (j = 0; j < {wo}; ++j) {{ /* column 2j: taps a[j], b[j], a[j + 1] */
            const int u = a[j], m = b[j], v = a[j + 1];
            p[j] = (int16_t)(u - m - v);
            p[{w} + j] = (int16_t)(u - m + v);
            p[2 * {w} + j] = (int16_t)(u + m - v);
            p[3 * {w} + j] = (int16_t)(u + m + v);
        }}
        for (j = 0; j < {odd}; ++j) {{ /* column 2j + 1: taps b[j], a[j + 1], b[j + 1] */
            const int u = b[j], m = a[j + 1], v = b[j + 1];
            p[{wo} + j] = (int16_t)(u - m - v);
            p[{w} + {wo} + j] = (int16_t)(u - m + v);
            p[2 * {w} + {wo} + j] = (int16_t)(u + m - v);
            p[3 * {w} + {wo} + j] = (int16_t)(u + m + v);
        }}
    }}
}}

/* Exact conv sums at row r of one filter, as sums[j] = column 2j and sums[{wo} + 1 + j] = column
 * 2j + 1, with a sentinel below every threshold at {wo} and {w + 1} (the pooling windows' missing
 * odd columns). rows[ky] holds the patterns of input row r + ky - 1 (zero outside the image);
 * codes[c * 3 + ky] = (sign << 2) | pattern of the filter's kernel row (channel c, row ky). */
static void l{i}_conv_row(const int16_t *const *rows, const uint8_t *restrict codes,
    {acc} *restrict sums)
{{
{pointers}    int x;
    for (x = 0; x < {wo}; ++x) sums[x] = ({acc})({terms("")});
    for (x = 0; x < {odd}; ++x) sums[{wo} + 1 + x] = ({acc})({terms(f"{wo} + ")});
    sums[{wo}] = {sentinel(acc)};
    sums[{w + 1}] = {sentinel(acc)};
}}

/* Every kernel row (filter, channel, row) as (sign << 2) | pattern: its 3 weight signs are
 * sign * (the pattern's signs), whose left sign is +. */
static void l{i}_codes(uint8_t *restrict codes)
{{
    int k;
    for (k = 0; k < {f} * {n}; ++k) {{
        const int s = ddnn_bit(l{i}_weights, 3 * k) << 2 | ddnn_bit(l{i}_weights, 3 * k + 1) << 1
            | ddnn_bit(l{i}_weights, 3 * k + 2);
        codes[k] = (uint8_t)((s & 4) ? s : 3 - s);
    }}
}}
"""


def binary_conv_row(p: LayerPlan) -> str:
    """Later layers: XNOR-popcount sums of the ±1 input map for one row of one filter."""
    c, h, w = p.layer.in_shape
    i, acc, word, nw = p.index, p.acc, p.in_word, p.in_words
    pop = POPCOUNT[word]
    stride = (w + 2) * nw
    if nw == 1:
        ones = (
            f"{pop}(({word})(w0 ^ src[x])) + {pop}(({word})(w1 ^ src[x + 1]))"
            f" + {pop}(({word})(w2 ^ src[x + 2]))"
        )
        setup = f"const {word} w0 = wt[0], w1 = wt[1], w2 = wt[2];"
        left, right = f"{pop}(w0)", f"{pop}(w2)"
        helper = ""
    else:
        ones = f"l{i}_ones(wt, src + x * {nw}, 3 * {nw})"
        setup = "/* words of the 3 taps are contiguous, like the input's 3 columns */"
        left, right = (
            f"l{i}_ones(wt, l{i}_zero, {nw})",
            f"l{i}_ones(wt + 2 * {nw}, l{i}_zero, {nw})",
        )
        helper = f"""\
static const {word} l{i}_zero[{nw}] = {{0}};

static int l{i}_ones(const {word} *a, const {word} *b, int n)
{{
    int k, ones = 0;
    for (k = 0; k < n; ++k) ones += {pop}(a[k] ^ b[k]);
    return ones;
}}

"""
    return f"""\
{helper}/* row[x]: sum over taps of ({c} - 2 * popcount(weights ^ inputs)) at row r of filter o. A zero
 * padding word reads as all -1 rather than as no input, so its contribution is taken back. */
static void l{i}_conv_row(const {word} *restrict in, int o, int r, {acc} *restrict row)
{{
    int ky, x;
    for (x = 0; x < {w}; ++x) row[x] = 0;
    for (ky = 0; ky < 3; ++ky) {{
        const int y = r + ky - 1;
        const {word} *wt = l{i}_weights + (o * 9 + ky * 3) * {nw};
        const {word} *src;
        if (y < 0 || y >= {h}) continue;
        src = in + (long)y * {stride}; /* src[x + kx] is input column x + kx - 1 */
        {{
            {setup}
            for (x = 0; x < {w}; ++x) row[x] = ({acc})(row[x] + {3 * c} - 2 * ({ones}));
            row[0] = ({acc})(row[0] - ({c} - 2 * {left}));
            row[{w} - 1] = ({acc})(row[{w} - 1] - ({c} - 2 * {right}));
        }}
    }}
}}
"""


def hits(p: LayerPlan) -> str:
    """Horizontal max-pool + threshold of one filter's row as bits of the column words."""
    w = p.layer.in_shape[2]
    wo = p.layer.out_shape[2]
    i, acc, word, nw = p.index, p.acc, p.word, p.words
    if p.layer.real_input:  # split columns with sentinels: one uniform, contiguous loop
        odd_before, odd_after, even = f"sums[{wo} + j]", f"sums[{wo} + 1 + j]", "sums[j]"
        body = f"""\
    for (j = 0; j < {wo}; ++j) {{ /* columns 2j - 1, 2j, 2j + 1 */
        {acc} m = {odd_before};
        const {acc} e = {even}, d = {odd_after};
        m = e > m ? e : m;
        m = d > m ? d : m;
        dst[j * {nw}] = ({word})(dst[j * {nw}] | (m >= t ? bit : 0));
    }}
"""
    else:

        def window(j: int) -> str:  # a border column, fewer than 3 sums in its window
            cols = [x for x in (2 * j - 1, 2 * j, 2 * j + 1) if 0 <= x < w]
            m = f"sums[{cols[0]}]"
            for x in cols[1:]:
                m = f"(sums[{x}] > {m} ? sums[{x}] : {m})"
            return f"    dst[{j * nw}] = ({word})(dst[{j * nw}] | ({m} >= t ? bit : 0));\n"

        full = wo if w % 2 == 0 else wo - 1  # columns j with all of 2j - 1, 2j, 2j + 1 inside
        body = window(0)
        if full > 1:
            body += f"""\
    for (j = 1; j < {full}; ++j) {{ /* columns 2j - 1, 2j, 2j + 1 */
        {acc} m = sums[2 * j - 1];
        const {acc} e = sums[2 * j], d = sums[2 * j + 1];
        m = e > m ? e : m;
        m = d > m ? d : m;
        dst[j * {nw}] = ({word})(dst[j * {nw}] | (m >= t ? bit : 0));
    }}
"""
        if w % 2 == 1 and wo > 1:
            body += window(wo - 1)
    return f"""\
/* Sets bit o of hits[j] when the max of the sums in columns 2j-1, 2j, 2j+1 reaches t. */
static void l{i}_hits(const {acc} *restrict sums, {acc} t, int o, {word} *restrict hits)
{{
    const {word} bit = ({word})(1ul << (o % {p.bits}));
    {word} *dst = hits + o / {p.bits};
    int j;
{body}    (void)j;
}}
"""


def emit(p: LayerPlan) -> str:
    """Writes one pooled output row: packed words for the next layer, or wire-layout bits."""
    f, ho, wo = p.layer.out_shape
    i, word, nw = p.index, p.word, p.words
    if p.last:
        return f"""\
/* Output row i into the wire layout: bit (o * {ho} + i) * {wo} + j, MSB first. */
static void l{i}_emit(uint8_t *restrict out, int i, const {word} *restrict pooled)
{{
    int o, j;
    for (o = 0; o < {f}; ++o) {{
        const int k = o / {p.bits}, shift = o % {p.bits};
        const int flip = (l{i}_falling[k] >> shift) & 1;
        const long n0 = ((long)o * {ho} + i) * {wo};
        for (j = 0; j < {wo}; ++j) {{
            if (((pooled[j * {nw} + k] >> shift) & 1) ^ flip)
                out[(n0 + j) >> 3] |= (uint8_t)(0x80u >> ((n0 + j) & 7));
        }}
    }}
}}
"""
    return f"""\
/* Output row i into the padded packed-channel map the next layer reads. */
static void l{i}_emit({word} *restrict out, int i, const {word} *restrict pooled)
{{
    {word} *dst = out + ((long)i * ({wo} + 2) + 1) * {nw};
    int j;
    for (j = 0; j < {wo} * {nw}; ++j) dst[j] = ({word})(pooled[j] ^ l{i}_falling[j % {nw}]);
}}
"""


def run(p: LayerPlan) -> str:
    """The layer: per conv row, every filter's hits, then the vertical part of the 3x3/2 pool."""
    f, _, wo = p.layer.out_shape
    c, h, w = p.layer.in_shape
    i, acc, word, nw = p.index, p.acc, p.word, p.words
    out_t = "uint8_t" if p.last else word
    n = f"{wo} * {nw}"
    if p.layer.real_input:
        decls = f"""\
    int16_t patterns[3][{c} * 4 * {w}]; /* pattern rows of input row y in slot y % 3 */
    const int16_t *rows[3];
    uint8_t codes[{f} * {3 * c}];
    {acc} sums[{w} + 2];"""
        setup = f"""
    memset(patterns[2], 0, sizeof patterns[2]); /* row -1: zero padding */
    l{i}_codes(codes);
    l{i}_patterns(in, 0, patterns[0]);"""
        per_row = f"""\
        if (r + 1 < {h}) l{i}_patterns(in, r + 1, patterns[(r + 1) % 3]);
        else memset(patterns[(r + 1) % 3], 0, sizeof patterns[0]); /* row {h}: zero padding */
        rows[0] = patterns[(r + 2) % 3];
        rows[1] = patterns[r % 3];
        rows[2] = patterns[(r + 1) % 3];
        for (j = 0; j < {n}; ++j) hits[j] = 0;
        for (o = 0; o < {f}; ++o) {{
            l{i}_conv_row(rows, codes + o * {3 * c}, sums);
            l{i}_hits(sums, l{i}_thresholds[o], o, hits);
        }}"""
    else:
        decls = f"    {acc} sums[{w}];"
        setup = ""
        per_row = f"""\
        for (j = 0; j < {n}; ++j) hits[j] = 0;
        for (o = 0; o < {f}; ++o) {{
            l{i}_conv_row(in, o, r, sums);
            l{i}_hits(sums, l{i}_thresholds[o], o, hits);
        }}"""
    return f"""\
static void l{i}_run(const {p.in_word} *restrict in, {out_t} *restrict out)
{{
{decls}
    {word} hits[{n}], pooled[{n}], carry[{n}];
    int r, o, j;
    for (j = 0; j < {n}; ++j) pooled[j] = carry[j] = 0;{setup}
    for (r = 0; r < {h}; ++r) {{
{per_row}
        if ((r & 1) == 0) {{ /* output row r/2 pools conv rows r-1, r, r+1 */
            for (j = 0; j < {n}; ++j) pooled[j] = ({word})(r > 0 ? carry[j] | hits[j] : hits[j]);
            if (r == {h} - 1) l{i}_emit(out, r >> 1, pooled);
        }} else {{
            for (j = 0; j < {n}; ++j) {{
                pooled[j] = ({word})(pooled[j] | hits[j]);
                carry[j] = hits[j];
            }}
            l{i}_emit(out, r >> 1, pooled);
        }}
    }}
}}
"""


def head(num_classes: int, num_features: int, fused: bool) -> str:
    """Exit head: exact ±1 dot products of the packed features, then the BatchNorm affine."""
    fb = (num_features + 7) // 8
    d = f"({num_features} - 2 * ones)"
    if fused:  # d * scale is exact in double, so this is fma(d, scale, shift) as PyTorch does
        score = f"(float)((double){d} * head_scale[k] + head_shift[k])"
    else:
        score = f"(float){d} * head_scale[k] + head_shift[k]"
    rounding = (
        "one rounding, as PyTorch's fused multiply-add does"
        if fused
        else "two roundings, as PyTorch does"
    )
    return f"""\
/* Class scores: d = exact +-1 dot product of features and class weights (XNOR + popcount), then
 * the BatchNorm d * scale + shift in float, with {rounding}. */
static void head(const uint8_t *restrict features, float *restrict scores)
{{
    int k, b;
    for (k = 0; k < {num_classes}; ++k) {{
        const uint8_t *w = head_weights + k * {fb};
        int ones = 0;
        for (b = 0; b < {fb}; ++b) ones += ddnn_pop8((uint8_t)(w[b] ^ features[b]));
        scores[k] = {score};
    }}
}}
"""
