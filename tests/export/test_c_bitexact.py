"""Generated C compiled with gcc -std=c99 -O2 -Wall -Wextra -Werror, bit for bit against PyTorch.

Sections here are crafted (random ±1 weights, BatchNorm statistics that put thresholds inside the
data, negative and zero scales, exact ties) over many shapes; trained runs are in test_run_export.
"""

import re
import subprocess

import numpy as np
import pytest
from cexport_support import (
    build,
    compile_library,
    crafted_section,
    edge_images,
    image_on_threshold,
    run_c,
    torch_reference,
)

from ddnn.export.c_codegen import generate_c
from ddnn.export.exporter import write_source
from ddnn.export.fold import fold_device

CASES = {
    "rgb32_conv4": ((3, 32, 32), (4,)),
    "rgb32_conv8_1": ((3, 32, 32), (8, 1)),
    "rgb32_conv8_4": ((3, 32, 32), (8, 4)),
    "rgb32_conv4_8": ((3, 32, 32), (4, 8)),
    "rgb32_conv16_2": ((3, 32, 32), (16, 2)),
    "gray16x10_conv4_2": ((1, 16, 10), (4, 2)),
    "odd13x11_three_layers": ((3, 13, 11), (5, 3, 2)),
    "40_channels_two_words": ((2, 7, 9), (40, 3)),
    "one_pixel": ((1, 1, 1), (2,)),
    "one_row": ((3, 1, 5), (3, 2)),
}


def threshold_images(section, folded, rng):
    """Images whose first-layer pooled sum at the middle output is exactly t and t - 1."""
    layer = folded.layers[0]
    signs = np.where(section.features[0].conv.weight.detach().numpy() >= 0, 1, -1)
    lo, hi = layer.value_range
    _, ho, wo = layer.out_shape
    pairs = []
    for o, t in enumerate(layer.thresholds):
        if not lo < t < hi:  # a constant channel has no step to sit on
            continue
        pair = [
            image_on_threshold(signs[o], layer.in_shape, ho // 2, wo // 2, int(v), rng)
            for v in (t, t - 1)
        ]
        if all(p is not None for p in pair):
            pairs.append((o, pair))
    return pairs


@pytest.mark.parametrize("name", sorted(CASES))
def test_c_matches_pytorch_bit_for_bit(gcc, tmp_path, name):
    shape, filters = CASES[name]
    section = crafted_section(shape, filters, seed=sorted(CASES).index(name))
    folded = fold_device(section)
    source = generate_c(folded, 3, 0x12345678)
    infer = build(gcc, source, tmp_path)
    rng = np.random.default_rng(7)
    pairs = threshold_images(section, folded, rng)
    images = np.concatenate(
        [
            rng.integers(0, 256, size=(40, *shape), dtype=np.uint8),
            edge_images(shape, rng),
            *[np.stack(pair) for _, pair in pairs],
        ]
    )
    scores, packed = run_c(infer, images, 3, source.footprint.feature_bytes)
    want_scores, want_packed = torch_reference(section, images)
    assert np.array_equal(packed, want_packed)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
    assert np.array_equal(scores.argmax(1), want_scores.argmax(1))
    if len(filters) == 1 and shape[1] > 2:
        # The pairs sit on either side of PyTorch's own step: the bit flips between them.
        _, ho, wo = folded.layers[0].out_shape
        assert pairs, "no threshold image was found"
        for o, pair in pairs:
            _, bits = torch_reference(section, np.stack(pair))
            index = (o * ho + ho // 2) * wo + wo // 2
            flips = [np.unpackbits(b)[index] for b in bits]
            assert flips[0] != flips[1], o


def test_c_api_rejects_null_arguments(gcc, tmp_path):
    section = crafted_section((3, 8, 8), (4, 2))
    source = generate_c(fold_device(section), 0, 1)
    infer = build(gcc, source, tmp_path)
    image = np.ones((3, 8, 8), np.uint8)
    scores = np.full(3, 7.0, np.float32)
    packed = np.full(source.footprint.feature_bytes, 0xAB, np.uint8)
    args = [image.ctypes.data, scores.ctypes.data, packed.ctypes.data]
    for k in range(3):
        nulls = [None if i == k else a for i, a in enumerate(args)]
        assert infer(*nulls) == -1
    assert infer(None, None, None) == -1
    assert (scores == 7.0).all() and (packed == 0xAB).all()  # nothing written on error
    assert infer(*args) == 0
    assert "#define DDNN_ERR_NULL_ARGUMENT (-1)" in source.header


def test_generated_code_is_plain_c99_without_allocation_or_float_in_binary_layers(gcc, tmp_path):
    section = crafted_section((3, 16, 16), (8, 4))
    source = generate_c(fold_device(section), 2, 1)
    _, c_file = write_source(source, tmp_path)
    includes = set(re.findall(r"#include [<\"](.+?)[>\"]", source.source + source.header))
    assert includes == {"ddnn_device_2.h", "stdint.h", "string.h"}
    for word in ("malloc", "calloc", "realloc", "free(", "static float", "static double"):
        assert word not in source.source.replace("static const float", "")
    layers = source.source[
        source.source.index("---- layer 0") : source.source.index("---- exit head")
    ]
    assert not re.search(r"\b(float|double)\b", layers)
    # Stricter still: pedantic ISO C99, implicit conversions flagged.
    compile_library(
        gcc,
        c_file,
        tmp_path / "pedantic.so",
        ["-std=c99", "-pedantic", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Wshadow", "-Werror"],
    )


def test_constant_bytes_are_the_arrays_the_compiler_emits(gcc, tmp_path):
    section = crafted_section((3, 32, 32), (16, 4))
    source = generate_c(fold_device(section), 0, 1)
    _, c_file = write_source(source, tmp_path)
    obj = tmp_path / "device.o"
    subprocess.run(
        [gcc, "-std=c99", "-O0", "-c", f"-I{tmp_path}", str(c_file), "-o", str(obj)], check=True
    )
    symbols = subprocess.run(
        ["nm", "-S", str(obj)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    sizes = {
        parts[3]: int(parts[1], 16)
        for parts in (line.split() for line in symbols)
        if len(parts) == 4 and parts[2] in "rR"
    }
    assert sizes, "no read-only data symbols found"
    assert sum(sizes.values()) == source.footprint.const_bytes
    assert source.footprint.const_bytes < 2048
    assert f"constant data (flash): {source.footprint.const_bytes} bytes" in source.header


def test_two_devices_link_into_one_program(gcc, tmp_path):
    sources = [
        generate_c(fold_device(crafted_section((3, 8, 8), (4,), seed=k)), k, k) for k in (0, 1)
    ]
    files = [write_source(s, tmp_path)[1] for s in sources]
    main = tmp_path / "main.c"
    main.write_text(
        '#include "ddnn_device_0.h"\n#include "ddnn_device_1.h"\n'
        "int main(void) { static uint8_t in[192]; float s[3]; uint8_t f[32];\n"
        "  return ddnn_device_0_infer(in, s, f) | ddnn_device_1_infer(in, s, f); }\n"
    )
    exe = tmp_path / "both"
    subprocess.run(
        [
            gcc,
            "-std=c99",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{tmp_path}",
            str(main),
            *map(str, files),
            "-o",
            str(exe),
        ],
        check=True,
    )
    assert subprocess.run([str(exe)], check=False).returncode == 0
