"""The built-in data set ``synthetic-mvmc``: rendered multi-view multi-camera data shaped like MVMC.

Each sample is one object (car, bus or person) in a 3-D street scene with occluders, filmed by six
fixed cameras with different positions, heights, distances and fields of view
(:mod:`ddnn.data.scene`). A camera sees the object when the object's centre is in its field of
view, the object is large enough on its sensor and not (almost) fully occluded; it then yields a
crop of the object's projected bounding box resized to 32x32 (:mod:`ddnn.data.render`), so that
absolute size is mostly lost. A camera that does not see the object gives an all-zero image and the
label :data:`ABSENT`, as in the published ``MVMC.npz``.

The defaults of :class:`SyntheticMVMCConfig` were calibrated against a proxy of the paper's f = 4
MP-CC model (Adam 1e-3, minibatch 64, 100 epochs, 680 training samples; 2000 test samples): single
cameras alone reach about 39-80% (a far top-down camera that rarely sees the object is the weakest),
the local exit about 95%, the fused cloud exit about 96%, and zeroing any one camera at test time
costs 2.5-3.5 points. With the paper's full-batch recipe the cloud reaches about 94%.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from ddnn.data.render import render_views
from ddnn.data.scene import (
    CAMERA_POSES,
    SENSOR_HEIGHT,
    SENSOR_WIDTH,
    CameraRig,
    Scenes,
    box_corners,
    make_camera_rig,
    project,
    sample_scenes,
)

logger = logging.getLogger(__name__)

CLASS_NAMES = ("car", "bus", "person")
ABSENT = 3
MAX_CAMERAS = len(CAMERA_POSES)
_MAX_ROUNDS = 100


@dataclass(frozen=True)
class SyntheticMVMCConfig:
    """Size and difficulty of ``synthetic-mvmc``; the defaults are the calibrated data set.

    Attributes:
        num_train: samples in the training split (MVMC: 680).
        num_test: samples in the test split (MVMC: 171).
        seed: seed of the training split; the test split uses a stream derived from it.
        num_cameras: number of cameras, the first ones of the fixed rig (1 to 6).
        image_size: side of each square view in pixels (MVMC: 32).
        noise_std: standard deviation of the sensor noise in [0, 1] intensity units, scaled per
            camera (far and cheap cameras are noisier).
        num_occluders: mean number of occluders (poles, trees/bushes, boxes) per scene.
        shape_variation: 0 = canonical class shapes; 1 = full intra-class variation of proportions
            including vans and minibuses, which make cars and buses overlap.
        colour_overlap: probability that an object's main colour is drawn uniformly instead of
            from its class palette (palettes already share white, red and blue).
        min_visible_fraction: a camera sees the object only if at least this fraction of the
            object's pixels in its crop is not hidden by occluders.
        min_object_pixels: a camera sees the object only if its projected bounding box is at least
            this many sensor pixels (of 320x240) along its longer side.
        frame_margin: a camera sees the object only if the projection of the object's centre lies
            inside its sensor shrunk by this fraction of the sensor size on each side. Judging by the
            centre, not by the bounding box, keeps the field-of-view test independent of the class.
        crop_margin: mean margin added around the bounding box, as a fraction of its longer side.
        crop_jitter: random shift of the crop centre, as a fraction of the crop side.
    """

    num_train: int = 680
    num_test: int = 171
    seed: int = 0
    num_cameras: int = 6
    image_size: int = 32
    noise_std: float = 0.025
    num_occluders: float = 3.0
    shape_variation: float = 0.3
    colour_overlap: float = 0.3
    min_visible_fraction: float = 0.4
    min_object_pixels: float = 6.0
    frame_margin: float = 0.02
    crop_margin: float = 0.25
    crop_jitter: float = 0.1

    def __post_init__(self) -> None:
        _check_seed(self.seed)
        if not 1 <= self.num_cameras <= MAX_CAMERAS:
            raise ValueError(
                f"num_cameras must be between 1 and {MAX_CAMERAS}, got {self.num_cameras}"
            )
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {self.image_size}")
        if self.num_train < 1 or self.num_test < 1:
            raise ValueError(
                f"num_train and num_test must be >= 1, got {self.num_train} and {self.num_test}"
            )
        for name in (
            "noise_std",
            "num_occluders",
            "min_object_pixels",
            "crop_margin",
            "crop_jitter",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.frame_margin < 0.5:
            raise ValueError(f"frame_margin must be in [0, 0.5), got {self.frame_margin}")
        for name in ("shape_variation", "colour_overlap", "min_visible_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _crop_windows(
    scenes: Scenes, rig: CameraRig, config: SyntheticMVMCConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop windows ``(N, C, 3)`` as ``(u0, v0, side)`` and whether each camera can see them.

    A camera can see the object when its centre projects onto the sensor (inside
    ``config.frame_margin``), it is in front of the camera and its bounding box is at least
    ``config.min_object_pixels`` long; occlusion is judged later, on the rendered crop.
    """
    yaw, pos = scenes.obj_yaw[:, None], scenes.obj_pos[:, None, :]
    corners = box_corners(scenes.part_center, scenes.part_half, yaw, pos)  # (N, P, 8, 3)
    points = corners.reshape(len(pos), -1, 3)
    centre = (points.min(1, keepdims=True) + points.max(1, keepdims=True)) / 2  # (N, 1, 3)
    u, v, depth = project(points, rig)  # (N, C, P*8)
    uc, vc = (a[..., 0] for a in project(centre, rig)[:2])  # (N, C)
    mu, mv = config.frame_margin * SENSOR_WIDTH, config.frame_margin * SENSOR_HEIGHT
    in_frame = (uc >= mu) & (uc <= SENSOR_WIDTH - mu) & (vc >= mv) & (vc <= SENSOR_HEIGHT - mv)
    u0, u1, v0, v1 = u.min(-1), u.max(-1), v.min(-1), v.max(-1)
    w, h = u1 - u0, v1 - v0
    seeable = (depth.min(-1) > 1.0) & in_frame & (np.maximum(w, h) >= config.min_object_pixels)
    shape = u0.shape
    side = np.maximum(w, h) * (1 + config.crop_margin * rng.uniform(0.5, 1.5, shape))
    side = np.maximum(side, 1.0)
    cu = (u0 + u1) / 2 + config.crop_jitter * side * rng.uniform(-1, 1, shape)
    cv = (v0 + v1) / 2 + config.crop_jitter * side * rng.uniform(-1, 1, shape)
    return np.stack([cu - side / 2, cv - side / 2, side], -1), seeable


def _generate(
    num_samples: int, rng: np.random.Generator, config: SyntheticMVMCConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rig = make_camera_rig(config.num_cameras)
    cams, size = config.num_cameras, config.image_size
    labels = rng.permutation(np.arange(num_samples) % len(CLASS_NAMES)).astype(np.int64)
    x = np.zeros((num_samples, cams, 3, size, size), np.float32)
    y = np.full((num_samples, cams), ABSENT, np.int64)
    pending = np.arange(num_samples)
    for _ in range(_MAX_ROUNDS):
        sc = sample_scenes(
            labels[pending],
            rng,
            config.shape_variation,
            config.colour_overlap,
            config.num_occluders,
        )
        crop, seeable = _crop_windows(sc, rig, config, rng)
        s_idx, c_idx = np.nonzero(seeable)
        images, visible = render_views(
            sc, rig, s_idx, c_idx, crop[s_idx, c_idx], size, config.noise_std, rng
        )
        present = visible >= config.min_visible_fraction
        s_idx, c_idx, images = s_idx[present], c_idx[present], images[present]
        x[pending[s_idx], c_idx] = images
        y[pending[s_idx], c_idx] = labels[pending[s_idx]]
        seen = np.zeros(len(pending), bool)
        seen[s_idx] = True
        pending = pending[~seen]
        if len(pending) == 0:
            return x, y, labels
    raise RuntimeError(
        f"{len(pending)} samples stayed unseen by every camera after {_MAX_ROUNDS} rounds"
    )


def generate_synthetic_mvmc(
    num_samples: int, seed: int = 0, config: SyntheticMVMCConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render ``num_samples`` multi-view samples; the same seed gives bit-identical arrays.

    Args:
        num_samples: number of samples (objects) to render, >= 1.
        seed: random seed; it replaces ``config.seed``, which only seeds the splits.
        config: camera count, image size and difficulty knobs; defaults to the calibrated set.

    Returns:
        ``X`` ``(N, C, 3, S, S)`` float32 RGB in [0, 1] (all zeros where a camera does not see
        the object), per-view labels ``(N, C)`` int64 with :data:`ABSENT` for such cameras, and the
        sample labels ``(N,)`` int64 (0 car, 1 bus, 2 person), balanced across classes. Every
        sample is seen by at least one camera.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    _check_seed(seed)
    config = config or SyntheticMVMCConfig()
    start = time.perf_counter()
    out = _generate(int(num_samples), np.random.default_rng(seed), config)
    logger.info(
        "rendered %d synthetic-mvmc samples in %.1f s", num_samples, time.perf_counter() - start
    )
    return out


def make_synthetic_mvmc_splits(
    config: SyntheticMVMCConfig | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train and test splits of ``config.num_train`` and ``config.num_test`` samples.

    The test split is drawn from a random stream derived from ``config.seed`` that differs from the
    training stream, so the two splits share no sample.

    Returns:
        ``{"train": (X, y_view, y), "test": (X, y_view, y)}`` as in :func:`generate_synthetic_mvmc`.
    """
    config = config or SyntheticMVMCConfig()
    train = _generate(config.num_train, np.random.default_rng(config.seed), config)
    test = _generate(config.num_test, np.random.default_rng([config.seed, 1]), config)
    return {"train": train, "test": test}
