"""Tests of the built-in ``synthetic-mvmc`` generator and its ray caster."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from ddnn.data.render import _box_hit, _cylinder_hit
from ddnn.data.synthetic import (
    ABSENT,
    CLASS_NAMES,
    SyntheticMVMCConfig,
    generate_synthetic_mvmc,
    make_synthetic_mvmc_splits,
)

N = 30


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return generate_synthetic_mvmc(N, seed=0)


@pytest.fixture(scope="module")
def large() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return generate_synthetic_mvmc(300, seed=1)


def test_shapes_dtypes_and_ranges(data: tuple[np.ndarray, ...]) -> None:
    x, yv, y = data
    assert x.shape == (N, 6, 3, 32, 32) and x.dtype == np.float32
    assert yv.shape == (N, 6) and yv.dtype == np.int64
    assert y.shape == (N,) and y.dtype == np.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(yv)) <= {0, 1, 2, ABSENT}
    assert set(np.unique(y)) <= {0, 1, 2}
    assert CLASS_NAMES == ("car", "bus", "person") and ABSENT == 3


def test_same_seed_is_bit_identical_and_other_seed_differs(data: tuple[np.ndarray, ...]) -> None:
    again = generate_synthetic_mvmc(N, seed=0)
    for a, b in zip(data, again, strict=True):
        assert np.array_equal(a, b)
    other = generate_synthetic_mvmc(N, seed=1)
    assert not np.array_equal(data[0], other[0])


def test_absent_views_are_zero_and_present_views_are_images(data: tuple[np.ndarray, ...]) -> None:
    x, yv, _ = data
    absent = yv == ABSENT
    assert absent.any() and (~absent).any()
    assert np.all(x[absent] == 0.0)
    present = x[~absent].reshape(int((~absent).sum()), -1)
    assert np.all(present.max(1) > 0.0)
    assert np.all(present.std(1) > 0.01)  # a rendered scene, not a flat fill


def test_every_sample_is_seen_and_view_labels_agree(data: tuple[np.ndarray, ...]) -> None:
    _, yv, y = data
    present = yv != ABSENT
    assert present.any(1).all()
    assert np.all(yv[present] == np.broadcast_to(y[:, None], yv.shape)[present])


def test_classes_are_balanced() -> None:
    _, _, y = generate_synthetic_mvmc(31, seed=3)
    counts = np.bincount(y, minlength=3)
    assert counts.max() - counts.min() <= 1


def test_cameras_have_different_visibility_rates(large: tuple[np.ndarray, ...]) -> None:
    _, yv, _ = large
    rate = (yv != ABSENT).mean(0)
    assert rate.max() >= 0.8, rate  # some camera sees most objects
    assert rate.min() <= 0.4, rate  # some camera rarely does
    assert len(np.unique(np.round(rate, 2))) >= 4, rate
    # Fusion has something to work with: most objects are seen by several cameras.
    assert ((yv != ABSENT).sum(1) >= 2).mean() > 0.8


def test_occlusion_threshold_controls_visibility() -> None:
    strict = SyntheticMVMCConfig(min_visible_fraction=0.99, num_occluders=8.0)
    lax = SyntheticMVMCConfig(min_visible_fraction=0.0, num_occluders=8.0)
    seen_strict = (generate_synthetic_mvmc(150, 4, strict)[1] != ABSENT).mean()
    seen_lax = (generate_synthetic_mvmc(150, 4, lax)[1] != ABSENT).mean()
    assert seen_strict < seen_lax


def test_splits_have_requested_sizes_and_share_no_sample() -> None:
    cfg = SyntheticMVMCConfig(num_train=40, num_test=15, seed=7)
    splits = make_synthetic_mvmc_splits(cfg)
    assert set(splits) == {"train", "test"}
    (xtr, yvtr, ytr), (xte, yvte, yte) = splits["train"], splits["test"]
    assert xtr.shape[0] == yvtr.shape[0] == ytr.shape[0] == 40
    assert xte.shape[0] == yvte.shape[0] == yte.shape[0] == 15
    digest = {hashlib.sha1(s.tobytes()).hexdigest() for s in xtr}
    assert not any(hashlib.sha1(s.tobytes()).hexdigest() in digest for s in xte)
    # The training split is the generator's output for the config's seed.
    assert np.array_equal(xtr, generate_synthetic_mvmc(40, seed=7, config=cfg)[0])


def test_fewer_cameras_and_smaller_images() -> None:
    x, yv, _ = generate_synthetic_mvmc(
        12, seed=2, config=SyntheticMVMCConfig(num_cameras=2, image_size=16)
    )
    assert x.shape == (12, 2, 3, 16, 16) and yv.shape == (12, 2)
    assert (yv != ABSENT).any(1).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: generate_synthetic_mvmc(0), "num_samples must be >= 1"),
        (lambda: generate_synthetic_mvmc(2.5), "num_samples must be an integer"),  # type: ignore[arg-type]
        (lambda: SyntheticMVMCConfig(num_cameras=0), "num_cameras must be between 1 and 6"),
        (lambda: SyntheticMVMCConfig(num_cameras=7), "num_cameras must be between 1 and 6"),
        (lambda: SyntheticMVMCConfig(image_size=4), "image_size must be >= 8"),
        (lambda: SyntheticMVMCConfig(num_test=0), "num_train and num_test must be >= 1"),
        (lambda: SyntheticMVMCConfig(colour_overlap=1.5), r"colour_overlap must be in \[0, 1\]"),
        (lambda: SyntheticMVMCConfig(noise_std=-0.1), "noise_std must be >= 0"),
        (lambda: generate_synthetic_mvmc(3, seed=-1), "seed must be a non-negative integer"),
    ],
)
def test_invalid_arguments_raise_clear_errors(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


def test_result_does_not_depend_on_thread_count(data: tuple[np.ndarray, ...]) -> None:
    code = (
        "import hashlib; from ddnn.data.synthetic import generate_synthetic_mvmc as g; "
        f"print(hashlib.sha1(g({N}, seed=0)[0].tobytes()).hexdigest())"
    )
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == hashlib.sha1(data[0].tobytes()).hexdigest()


def _rays(origin: tuple[float, float, float], direction: tuple[float, float, float]) -> tuple:
    o = tuple(np.array([[c]], np.float32) for c in origin)
    d = tuple(np.array([[c]], np.float32) for c in direction)
    return o, d


def test_box_hit_distance_and_shading() -> None:
    # A unit cube (half extents 0.5) centred at the origin, ray from x = -3 along +x: enters at x = -0.5.
    o, d = _rays((-3.0, 0.0, 0.0), (1.0, 1e-7, 1e-7))
    light = tuple(np.array([[c]], np.float32) for c in (-1.0, 0.0, 0.0))  # sun towards -x
    t, shade = _box_hit(o, d, np.array([[0.5, 0.5, 0.5]], np.float32), light)
    assert t[0, 0] == pytest.approx(2.5, abs=1e-5)
    assert shade[0, 0] == pytest.approx(1.0)  # the -x face looks straight at the sun
    o, d = _rays((-3.0, 2.0, 0.0), (1.0, 1e-7, 1e-7))  # passes beside the cube
    t, _ = _box_hit(o, d, np.array([[0.5, 0.5, 0.5]], np.float32), light)
    assert np.isinf(t[0, 0])


def test_cylinder_hit_side_and_top() -> None:
    half = np.array([[1.0, 1.0, 2.0]], np.float32)  # radius 1, height 4
    light = tuple(np.array([[c]], np.float32) for c in (0.0, 0.0, 1.0))
    o, d = _rays((-5.0, 0.0, 0.0), (1.0, 1e-7, 1e-7))
    t, shade = _cylinder_hit(o, d, half, light)
    assert t[0, 0] == pytest.approx(4.0, abs=1e-4)
    assert shade[0, 0] == pytest.approx(0.0, abs=1e-4)  # the side is vertical, the sun overhead
    o, d = _rays((0.3, 0.0, 10.0), (1e-7, 1e-7, -1.0))  # straight down onto the top cap
    t, shade = _cylinder_hit(o, d, half, light)
    assert t[0, 0] == pytest.approx(8.0, abs=1e-4)
    assert shade[0, 0] == pytest.approx(1.0)
