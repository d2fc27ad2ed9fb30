"""`ddnn export c` and the C device engine on trained runs: files, bit-exactness on the test split,
the engine's cache (loadable without torch), input checks and every bad input."""

import argparse
import ctypes
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from cexport_support import compile_library, run_c, torch_reference

from ddnn.export.cli import add_export_parser, cmd_export_c
from ddnn.export.engine import CDeviceEngine
from ddnn.train.checkpoint import load_section


def export(*argv):
    """Runs `export c ...` through a parser built by add_export_parser, as `ddnn` will."""
    parser = argparse.ArgumentParser(prog="ddnn")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "c", *map(str, argv)])
    return args.func(args)


def device_images(splits, device):
    """The test split's inputs of one device as the 8-bit images they were made from."""
    x = splits.test.x[:, device].numpy()
    pixels = np.rint(x * 255)
    assert np.array_equal((pixels / 255).astype(np.float32), x)  # the data is on the 8-bit grid
    return pixels.astype(np.uint8)


@pytest.mark.parametrize("filters", [(4,), (8, 1), (4, 8)], ids=["conv4", "conv8_1", "conv4_8"])
def test_export_all_devices_compiles_and_is_bit_exact_on_the_test_split(
    gcc, tmp_path, train_tiny, splits, filters, capsys
):
    run = train_tiny(filters)
    out = tmp_path / "c"
    assert export(run, "--all-devices", "--out", out) == 0
    assert "wrote 12 files" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"ddnn_device_{k}.{ext}" for k in range(6) for ext in ("c", "h")
    )
    for k in (0, 5) if len(filters) == 1 else (2,):
        section, config, version = load_section(run, f"device_{k}")
        header = (out / f"ddnn_device_{k}.h").read_text()
        assert f"#define DDNN_DEVICE_{k}_MODEL_VERSION 0x{version:08X}u" in header
        for words in ("constant data (flash)", "working RAM", "wire bytes per sample"):
            assert words in header
        lib = ctypes.CDLL(
            str(compile_library(gcc, out / f"ddnn_device_{k}.c", tmp_path / f"{k}.so"))
        )
        infer = getattr(lib, f"ddnn_device_{k}_infer")
        infer.argtypes = [ctypes.c_void_p] * 3
        images = device_images(splits, k)
        feature_bytes = int(header.split(f"DDNN_DEVICE_{k}_FEATURE_BYTES ")[1].split()[0])
        scores, packed = run_c(infer, images, config.num_classes, feature_bytes)
        want_scores, want_packed = torch_reference(section, images)
        assert np.array_equal(packed, want_packed)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
        assert np.array_equal(scores.argmax(1), want_scores.argmax(1))


@pytest.mark.parametrize("filters", [(4,), (4, 8)], ids=["conv4", "conv4_8"])
def test_engine_matches_the_pytorch_section_on_the_test_split(
    train_tiny, splits, filters, tmp_path
):
    run = train_tiny(filters)
    engine = CDeviceEngine(run, 1, build_dir=tmp_path / "cache")
    section, config, version = load_section(run, "device_1")
    assert engine.model_version == version
    assert engine.num_classes == config.num_classes
    assert engine.input_shape == (3, 32, 32)
    assert engine.feature_shape == tuple(section.feature_shape)
    x = splits.test.x[:, 1]
    with torch.no_grad():
        want_scores, want_feats = section(x)
    from ddnn.wire import pack_bits_batch

    scores, packed = engine.infer_batch(x.numpy())
    assert np.array_equal(packed, pack_bits_batch(want_feats.numpy()))
    np.testing.assert_allclose(scores, want_scores.numpy(), rtol=1e-6, atol=1e-6)
    one_scores, one_packed = engine.infer(x[0].numpy())
    assert one_scores.dtype == np.float32 and one_scores.shape == (config.num_classes,)
    assert one_packed == packed[0].tobytes()


def test_engine_builds_once_and_loads_the_build_without_torch(train_tiny, tmp_path):
    run = train_tiny((4,))
    cache = tmp_path / "cache"
    first = CDeviceEngine(run, 0, build_dir=cache)
    builds = list(cache.glob("device_0-v*"))
    assert len(builds) == 1 and builds[0].name == f"device_0-v{first.model_version:08x}"
    stamp = first.library.stat().st_mtime_ns
    assert CDeviceEngine(run, 0, build_dir=cache).library.stat().st_mtime_ns == stamp
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from ddnn.export.engine import CDeviceEngine\n"
        f"e = CDeviceEngine({str(run)!r}, 0, build_dir={str(cache)!r})\n"
        "s, f = e.infer(np.zeros(e.input_shape, np.float32))\n"
        "print(e.model_version, len(f))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(first.model_version), "128"]


def test_engine_default_cache_lives_in_the_run_directory(train_tiny):
    run = train_tiny((4,))
    engine = CDeviceEngine(run, 3)
    assert engine.library.parent.parent == run / "c_build"


def test_engine_rejects_inputs_off_the_8_bit_grid(train_tiny, tmp_path):
    engine = CDeviceEngine(train_tiny((4,)), 0, build_dir=tmp_path)
    x = np.full(engine.input_shape, 128 / 255, np.float32)
    engine.infer(x)
    engine.infer(x.astype(np.float64))
    for bad, message in [
        (np.where(np.arange(x.size).reshape(x.shape) == 5, 0.5, x), "not an 8-bit pixel"),
        (np.full(x.shape, 1.5, np.float32), "not an 8-bit pixel"),
        (np.full(x.shape, -1 / 255, np.float32), "not an 8-bit pixel"),
        (np.full(x.shape, np.nan, np.float32), "not an 8-bit pixel"),
        (x[:, :16], "shape"),
        (np.zeros(x.shape, np.uint8), "float pixels"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.infer(bad)
    with pytest.raises(ValueError, match="uint8"):
        engine.infer_u8(x)


def test_c_api_of_an_exported_run_checks_null_arguments(train_tiny, tmp_path):
    engine = CDeviceEngine(train_tiny((8, 1)), 2, build_dir=tmp_path)
    infer = getattr(ctypes.CDLL(str(engine.library)), engine.infer_symbol)
    infer.argtypes = [ctypes.c_void_p] * 3
    image = np.zeros(engine.input_shape, np.uint8)
    scores = np.zeros(engine.num_classes, np.float32)
    packed = np.zeros(8, np.uint8)
    assert infer(None, scores.ctypes.data, packed.ctypes.data) == -1
    assert infer(image.ctypes.data, None, packed.ctypes.data) == -1
    assert infer(image.ctypes.data, scores.ctypes.data, None) == -1
    assert infer(image.ctypes.data, scores.ctypes.data, packed.ctypes.data) == 0


def test_bad_runs_and_devices_are_clear_value_errors(train_tiny, tmp_path):
    run = train_tiny((4,))
    cases = [
        ((train_tiny((4,), "model.device.binary=false"), "--device", 0), "non-binary"),
        ((train_tiny((), "model.cloud.filters=[2]"), "--device", 0), "raw offloading"),
        ((run, "--device", 6), r"out of range: .* 6 devices \(0..5\)"),
        ((run, "--device", -1), "out of range"),
        ((tmp_path / "nowhere", "--device", 0), "does not exist"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            export(*args, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "sections" / "device_1.pt").unlink()
    with pytest.raises(ValueError, match="device_1.pt is in the manifest but missing"):
        export(broken, "--device", 1, "--out", tmp_path / "out")
    with pytest.raises(ValueError, match="missing|not found"):
        CDeviceEngine(broken, 1, build_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="out of range"):
        CDeviceEngine(run, 9, build_dir=tmp_path / "cache")


def test_non_empty_output_folder_needs_force(train_tiny, tmp_path, capsys):
    run = train_tiny((4,))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty; pass --force"):
        export(run, "--device", 2, "--out", out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert export(run, "--device", 2, "--out", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ddnn_device_2.c",
        "ddnn_device_2.h",
        "notes.txt",
    ]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        export(run, "--device", 2, "--out", tmp_path / "file")


def test_command_line_requires_one_device_choice(train_tiny, tmp_path):
    parser = argparse.ArgumentParser(prog="ddnn")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "c", "RUN", "--device", "3", "--out", "DIR"])
    assert args.func is cmd_export_c and args.device == 3 and not args.all_devices
    for argv in (["--out", "DIR"], ["--device", "0", "--all-devices", "--out", "DIR"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["export", "c", "RUN", *argv])
