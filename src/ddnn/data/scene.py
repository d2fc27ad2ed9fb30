"""Random 3-D street scenes (one object, occluders, lighting) and the fixed camera rig that films them.

The world is a metric street crossing with ``z`` up and the ground at ``z = 0``: two roads cross at
the origin, with sidewalks, grass and fixed street furniture (:data:`STATIC_OCCLUDERS`), filmed by
six fixed cameras (:data:`CAMERA_POSES`). Like a real camera network, the layout and the cameras are
the same in every sample; what varies is the object (car, bus or person, built from four primitives
in its own frame with random proportions, colours, position and heading), a few random extra
occluders, and the time of day and weather. Primitives are boxes or vertical elliptic cylinders,
both given by a centre and half extents (``rx, ry, hz`` for cylinders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BOX, CYLINDER = 0, 1
NUM_PARTS = 4
SENSOR_WIDTH, SENSOR_HEIGHT = 320, 240
OBJECT_AREA = 9.0  # objects are placed uniformly in [-OBJECT_AREA, OBJECT_AREA]^2 (metres)
OCCLUDER_AREA = 14.0
ROAD_HALF_WIDTH = 3.5  # two roads cross at the origin, along x and along y
SIDEWALK_WIDTH = 2.0
# The fixed street furniture: (kind, half extents xyz, colour rgb, position xy, yaw).
STATIC_OCCLUDERS = (
    (CYLINDER, 0.12, 0.12, 3.0, 0.4, 0.4, 0.42, 6.0, 6.0, 0.0),  # lamp posts
    (CYLINDER, 0.12, 0.12, 3.0, 0.4, 0.4, 0.42, -6.0, -6.0, 0.0),
    (CYLINDER, 0.12, 0.12, 3.0, 0.4, 0.4, 0.42, 6.2, -12.0, 0.0),
    (CYLINDER, 0.12, 0.12, 3.0, 0.4, 0.4, 0.42, -12.0, 6.2, 0.0),
    (CYLINDER, 1.2, 1.2, 2.5, 0.16, 0.32, 0.13, 11.0, -9.5, 0.0),  # trees
    (CYLINDER, 1.0, 1.0, 2.2, 0.2, 0.36, 0.15, -8.0, 10.0, 0.0),
    (CYLINDER, 1.3, 1.3, 2.8, 0.15, 0.3, 0.12, 12.0, 9.0, 0.0),
    (CYLINDER, 1.1, 1.1, 2.4, 0.18, 0.34, 0.14, -10.5, -11.0, 0.0),
    (BOX, 1.5, 1.0, 1.3, 0.5, 0.38, 0.26, -7.5, -7.0, 0.3),  # kiosk
    (BOX, 2.5, 0.3, 1.2, 0.62, 0.62, 0.6, 8.5, 6.2, 0.0),  # bus shelter wall
)

# Part kinds per class (car, bus, person): a person's torso and head are cylinders.
PART_KINDS = np.array([[BOX] * 4, [BOX] * 4, [BOX, CYLINDER, CYLINDER, BOX]], dtype=np.int64)

# (position xyz, look-at target xyz, horizontal field of view in degrees, noise multiplier).
# Positions, heights, distances and fields of view differ on purpose so that each camera has its
# own visibility rate and view quality, as in the real MVMC rig.
CameraPose = tuple[tuple[float, float, float], tuple[float, float, float], float, float]
CAMERA_POSES: tuple[CameraPose, ...] = (
    ((0.0, -22.0, 6.0), (1.0, -2.0, 0.0), 36.0, 1.0),  # south, the sharpest views
    ((28.0, 3.0, 5.0), (3.0, 0.0, 0.0), 32.0, 1.2),  # east, low
    ((-18.0, -18.0, 2.0), (-2.0, -2.0, 0.8), 48.0, 1.5),  # south-west at eye level: occluded
    ((-32.0, 26.0, 14.0), (-2.0, 2.0, 0.0), 64.0, 3.0),  # far wide-angle: sees all, poorly
    ((6.0, 24.0, 5.0), (1.0, 5.0, 0.0), 34.0, 2.0),  # north
    ((16.0, -16.0, 16.0), (6.0, -6.0, 0.0), 28.0, 3.0),  # high, narrow, looking down: rarely sees
)

# Colour palettes (RGB albedo). They overlap on purpose: white, red and blue cars, buses and shirts.
# fmt: off
_CAR_COLOURS = ((0.9, 0.9, 0.9), (0.08, 0.08, 0.09), (0.68, 0.7, 0.73), (0.42, 0.43, 0.45),
                (0.7, 0.1, 0.1), (0.15, 0.25, 0.6), (0.15, 0.35, 0.2), (0.8, 0.74, 0.6))
_BUS_COLOURS = ((0.9, 0.75, 0.1), (0.75, 0.12, 0.1), (0.9, 0.9, 0.88), (0.15, 0.3, 0.65),
                (0.2, 0.55, 0.25), (0.9, 0.45, 0.1))
_SHIRT_COLOURS = ((0.75, 0.15, 0.15), (0.15, 0.25, 0.6), (0.92, 0.92, 0.9), (0.1, 0.1, 0.1),
                  (0.2, 0.5, 0.25), (0.9, 0.8, 0.2), (0.5, 0.5, 0.5), (0.9, 0.5, 0.6))
_TROUSER_COLOURS = ((0.12, 0.15, 0.3), (0.08, 0.08, 0.08), (0.6, 0.52, 0.38), (0.35, 0.35, 0.38))
_SKIN_COLOURS = ((0.85, 0.68, 0.55), (0.6, 0.42, 0.3), (0.35, 0.24, 0.17), (0.2, 0.15, 0.1))
_OCCLUDER_COLOURS = ((0.45, 0.45, 0.47), (0.25, 0.45, 0.2), (0.15, 0.3, 0.12), (0.45, 0.35, 0.25),
                     (0.7, 0.7, 0.68), (0.55, 0.2, 0.15))
# fmt: on
_GLASS = np.array([0.12, 0.15, 0.2])
_TYRE = np.array([0.06, 0.06, 0.06])


@dataclass(frozen=True)
class CameraRig:
    """Pinhole cameras as arrays over cameras ``(C, ...)``; ``forward/right/up`` are unit vectors."""

    position: np.ndarray  # (C, 3)
    forward: np.ndarray  # (C, 3)
    right: np.ndarray  # (C, 3)
    up: np.ndarray  # (C, 3)
    focal: np.ndarray  # (C,) in sensor pixels
    noise: np.ndarray  # (C,) multiplier of the base sensor noise

    @property
    def num_cameras(self) -> int:
        return int(self.focal.shape[0])


def make_camera_rig(num_cameras: int) -> CameraRig:
    """Build the first ``num_cameras`` cameras of :data:`CAMERA_POSES`."""
    pos = np.array([p[0] for p in CAMERA_POSES[:num_cameras]], dtype=np.float64)
    target = np.array([p[1] for p in CAMERA_POSES[:num_cameras]], dtype=np.float64)
    fwd = target - pos
    fwd /= np.linalg.norm(fwd, axis=1, keepdims=True)
    right = np.stack([fwd[:, 1], -fwd[:, 0], np.zeros(len(fwd))], axis=1)
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    up = np.cross(right, fwd)
    hfov = np.radians([p[2] for p in CAMERA_POSES[:num_cameras]])
    focal = (SENSOR_WIDTH / 2) / np.tan(hfov / 2)
    noise = np.array([p[3] for p in CAMERA_POSES[:num_cameras]], dtype=np.float64)
    return CameraRig(pos, fwd, right, up, focal, noise)


@dataclass
class Scenes:
    """A batch of ``N`` scenes; object parts are ``(N, NUM_PARTS, ...)``, occluders ``(N, M, ...)``."""

    cls: np.ndarray  # (N,) object class
    obj_pos: np.ndarray  # (N, 3) object origin on the ground
    obj_yaw: np.ndarray  # (N,)
    part_center: np.ndarray  # (N, P, 3) in the object frame
    part_half: np.ndarray  # (N, P, 3)
    part_colour: np.ndarray  # (N, P, 3)
    occ_kind: np.ndarray  # (N, M) BOX or CYLINDER
    occ_center: np.ndarray  # (N, M, 3) world frame
    occ_yaw: np.ndarray  # (N, M)
    occ_half: np.ndarray  # (N, M, 3)
    occ_colour: np.ndarray  # (N, M, 3)
    occ_active: np.ndarray  # (N, M) bool
    sun: np.ndarray  # (N, 3) unit vector towards the sun
    ambient: np.ndarray  # (N,)
    sky: np.ndarray  # (N, 3)
    fog: np.ndarray  # (N,) visibility distance in metres


def _pick(
    rng: np.random.Generator, palette: tuple[tuple[float, float, float], ...], n: int
) -> np.ndarray:
    cols = np.array(palette)[rng.integers(0, len(palette), n)]
    return np.clip(cols + rng.uniform(-0.06, 0.06, (n, 3)), 0.0, 1.0)


def _main_colours(
    rng: np.random.Generator,
    palette: tuple[tuple[float, float, float], ...],
    n: int,
    overlap: float,
) -> np.ndarray:
    """Class palette colours, each replaced by a uniform random colour with probability ``overlap``."""
    cols = _pick(rng, palette, n)
    shared = rng.uniform(0.05, 0.95, (n, 3))
    return np.where(rng.random((n, 1)) < overlap, shared, cols)


def _spread(
    rng: np.random.Generator, n: int, nominal: float, spread: float, s: float
) -> np.ndarray:
    return nominal + s * spread * rng.uniform(-1.0, 1.0, n)


def _car_parts(
    rng: np.random.Generator, n: int, s: float, overlap: float
) -> tuple[np.ndarray, ...]:
    """Body, glazed cabin and two wheel pairs of ``n`` cars (``s`` = shape variation)."""
    van = rng.random(n) < 0.3 * s  # vans/SUVs are taller and longer, closer to a minibus
    length = np.where(van, rng.uniform(4.8, 5.6, n), _spread(rng, n, 4.3, 0.7, s))
    width = _spread(rng, n, 1.8, 0.15, s)
    body_top = np.where(van, rng.uniform(1.1, 1.4, n), _spread(rng, n, 0.95, 0.15, s))
    cabin_h = np.where(van, rng.uniform(0.65, 0.9, n), _spread(rng, n, 0.55, 0.12, s))
    cabin_len = length * np.where(van, 0.75, _spread(rng, n, 0.5, 0.08, s))
    cabin_off = -length * _spread(rng, n, 0.08, 0.06, s) * ~van
    main = _main_colours(rng, _CAR_COLOURS, n, overlap)
    zero = np.zeros(n)
    center = np.stack(
        [
            np.stack([zero, zero, (0.25 + body_top) / 2], 1),
            np.stack([cabin_off, zero, body_top + cabin_h / 2], 1),
            np.stack([0.3 * length, zero, zero + 0.3], 1),
            np.stack([-0.3 * length, zero, zero + 0.3], 1),
        ],
        1,
    )
    half = np.stack(
        [
            np.stack([length / 2, width / 2, (body_top - 0.25) / 2], 1),
            np.stack([cabin_len / 2, 0.45 * width, cabin_h / 2], 1),
            np.stack([zero + 0.33, width / 2 + 0.03, zero + 0.3], 1),
            np.stack([zero + 0.33, width / 2 + 0.03, zero + 0.3], 1),
        ],
        1,
    )
    colour = np.stack([main, 0.3 * main + 0.7 * _GLASS, main * 0 + _TYRE, main * 0 + _TYRE], 1)
    return center, half, colour


def _bus_parts(
    rng: np.random.Generator, n: int, s: float, overlap: float
) -> tuple[np.ndarray, ...]:
    """Body, window band and two wheel pairs of ``n`` buses (``s`` = shape variation)."""
    mini = rng.random(n) < 0.3 * s  # minibuses overlap with vans in size and proportion
    length = np.where(mini, rng.uniform(5.8, 7.5, n), _spread(rng, n, 11.0, 2.0, s))
    width = np.where(mini, rng.uniform(2.0, 2.3, n), _spread(rng, n, 2.5, 0.05, s))
    height = np.where(mini, rng.uniform(2.4, 2.8, n), _spread(rng, n, 3.1, 0.3, s))
    band = _spread(rng, n, 0.72, 0.05, s)
    axle = length / 2 - np.where(mini, 1.2, 2.5)
    main = _main_colours(rng, _BUS_COLOURS, n, overlap)
    zero = np.zeros(n)
    center = np.stack(
        [
            np.stack([zero, zero, (0.35 + height) / 2], 1),
            np.stack([zero, zero, band * height], 1),
            np.stack([axle, zero, zero + 0.45], 1),
            np.stack([-axle + 0.5, zero, zero + 0.45], 1),
        ],
        1,
    )
    half = np.stack(
        [
            np.stack([length / 2, width / 2, (height - 0.35) / 2], 1),
            np.stack([length / 2 + 0.02, width / 2 + 0.02, 0.13 * height], 1),
            np.stack([zero + 0.5, width / 2 + 0.02, zero + 0.45], 1),
            np.stack([zero + 0.5, width / 2 + 0.02, zero + 0.45], 1),
        ],
        1,
    )
    colour = np.stack([main, 0.2 * main + 0.8 * _GLASS, main * 0 + _TYRE, main * 0 + _TYRE], 1)
    return center, half, colour


def _person_parts(
    rng: np.random.Generator, n: int, s: float, overlap: float
) -> tuple[np.ndarray, ...]:
    """Legs, torso, head and arms of ``n`` people (``s`` = shape variation)."""
    h = _spread(rng, n, 1.72, 0.2, s)
    shoulder = _spread(rng, n, 0.46, 0.08, s)
    torso_depth = _spread(rng, n, 0.14, 0.04, s)
    shirt = _main_colours(rng, _SHIRT_COLOURS, n, overlap)
    trousers = _pick(rng, _TROUSER_COLOURS, n)
    skin = _pick(rng, _SKIN_COLOURS, n)
    zero = np.zeros(n)
    center = np.stack(
        [
            np.stack([zero, zero, 0.235 * h], 1),
            np.stack([zero, zero, 0.66 * h], 1),
            np.stack([zero, zero, 0.925 * h], 1),
            np.stack([zero, zero, 0.64 * h], 1),
        ],
        1,
    )
    half = np.stack(
        [
            np.stack([zero + 0.12, 0.4 * shoulder, 0.235 * h], 1),
            np.stack([torso_depth, shoulder / 2, 0.19 * h], 1),
            np.stack([zero + 0.1, zero + 0.1, 0.075 * h], 1),
            np.stack([zero + 0.08, shoulder / 2 + 0.07, 0.17 * h], 1),
        ],
        1,
    )
    colour = np.stack([trousers, shirt, skin, 0.8 * shirt], 1)
    return center, half, colour


def sample_scenes(
    labels: np.ndarray,
    rng: np.random.Generator,
    shape_variation: float,
    colour_overlap: float,
    num_occluders: float,
) -> Scenes:
    """Draw one random scene per entry of ``labels`` (0 car, 1 bus, 2 person).

    Args:
        labels: ``(N,)`` object class of each scene.
        rng: source of randomness; draws happen in a fixed order so results depend only on its state.
        shape_variation: 0 gives canonical proportions; 1 the full intra-class ranges (vans, minibuses).
        colour_overlap: probability that an object's main colour ignores its class palette.
        num_occluders: mean number of occluders per scene (Poisson).
    """
    n = len(labels)
    center = np.zeros((n, NUM_PARTS, 3))
    half = np.zeros((n, NUM_PARTS, 3))
    colour = np.zeros((n, NUM_PARTS, 3))
    builders = (_car_parts, _bus_parts, _person_parts)
    for c, build in enumerate(builders):
        idx = np.flatnonzero(labels == c)
        parts = build(rng, len(idx), shape_variation, colour_overlap)
        center[idx], half[idx], colour[idx] = parts
    # Positions do not depend on the class (street furniture in the way is removed instead), so
    # whether a camera sees the object says little about what it is.
    obj_pos = np.concatenate([rng.uniform(-OBJECT_AREA, OBJECT_AREA, (n, 2)), np.zeros((n, 1))], 1)
    obj_yaw = rng.uniform(0.0, 2 * math.pi, n)

    # Occluders: the fixed street furniture of the world, then a few random ones per scene.
    static = _static_occluders()
    m = max(1, math.ceil(2 * num_occluders))
    count = np.minimum(rng.poisson(num_occluders, n), m)
    dyn_xy = rng.uniform(-OCCLUDER_AREA, OCCLUDER_AREA, (n, m, 2))
    kind, occ_half, occ_colour = _occluder_shapes(rng, (n, m))
    occ_kind = np.concatenate([np.broadcast_to(static[0], (n, len(static[0]))), kind], 1)
    occ_half = np.concatenate([np.broadcast_to(static[1], (n, *static[1].shape)), occ_half], 1)
    occ_colour = np.concatenate([np.broadcast_to(static[2], (n, *static[2].shape)), occ_colour], 1)
    xy = np.concatenate([np.broadcast_to(static[3], (n, *static[3].shape)), dyn_xy], 1)
    occ_yaw = np.concatenate(
        [np.broadcast_to(static[4], (n, len(static[4]))), rng.uniform(0.0, 2 * math.pi, (n, m))], 1
    )
    occ_active = np.concatenate(
        [np.ones((n, len(static[0])), bool), np.arange(m)[None, :] < count[:, None]], 1
    )
    occ_center = np.concatenate([xy, occ_half[..., 2:]], -1)
    # Occluders, static ones included, may not intersect the object: drop those whose footprint
    # circles overlap it.
    obj_radius = np.hypot(half[..., 0] + np.abs(center[..., 0]), half[..., 1]).max(1)
    occ_radius = np.hypot(occ_half[..., 0], occ_half[..., 1])
    gap = np.hypot(*(xy - obj_pos[:, None, :2]).transpose(2, 0, 1))
    occ_active &= gap > obj_radius[:, None] + occ_radius + 0.2

    # Time of day and weather.
    az = rng.uniform(0.0, 2 * math.pi, n)
    el = rng.uniform(math.radians(20), math.radians(70), n)
    sun = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], 1)
    ambient = rng.uniform(0.3, 0.5, n)
    overcast = rng.random((n, 1))
    sky = (1 - overcast) * np.array([0.5, 0.68, 0.9]) + overcast * np.array([0.72, 0.74, 0.76])
    fog = rng.uniform(60.0, 250.0, n)
    return Scenes(
        labels,
        obj_pos,
        obj_yaw,
        center,
        half,
        colour,
        occ_kind,
        occ_center,
        occ_yaw,
        occ_half,
        occ_colour,
        occ_active,
        sun,
        ambient,
        sky,
        fog,
    )


def _occluder_shapes(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Kinds, half extents and colours of random poles, trees/bushes and boxes (kiosks, walls)."""
    draw = rng.integers(0, 3, shape)  # 0 pole, 1 tree/bush, 2 box
    kind = np.where(draw == 2, BOX, CYLINDER)
    radius = np.where(draw == 0, rng.uniform(0.08, 0.25, shape), rng.uniform(0.5, 1.8, shape))
    half = np.stack(
        [
            np.where(draw == 2, rng.uniform(0.5, 3.0, shape), radius),
            np.where(draw == 2, rng.uniform(0.2, 1.2, shape), radius),
            np.where(draw == 2, rng.uniform(0.5, 2.0, shape), rng.uniform(0.5, 3.5, shape)),
        ],
        -1,
    )
    colour = _pick(rng, _OCCLUDER_COLOURS, int(np.prod(shape))).reshape(*shape, 3)
    return kind, half, colour


def _static_occluders() -> tuple[np.ndarray, ...]:
    """The world's fixed street furniture as ``(kind, half, colour, xy, yaw)`` arrays, off the roads."""
    rows = np.array(STATIC_OCCLUDERS, dtype=np.float64)
    return (rows[:, 0].astype(np.int64), rows[:, 1:4], rows[:, 4:7], rows[:, 7:9], rows[:, 9])


def box_corners(
    center: np.ndarray, half: np.ndarray, yaw: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """World coordinates of the 8 corners of yawed boxes.

    Args:
        center: ``(..., 3)`` box centres in a frame rotated by ``yaw`` about ``origin``.
        half: ``(..., 3)`` half extents.
        yaw: rotation about ``z``, broadcastable to ``center[..., 0]``.
        origin: frame origin in the world, broadcastable to ``center``.

    Returns:
        ``(..., 8, 3)`` corners.
    """
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    local = center[..., None, :] + signs * half[..., None, :]  # (..., 8, 3)
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + origin[..., None, :]


def project(points: np.ndarray, rig: CameraRig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project world points ``(N, K, 3)`` into every camera: ``u, v, depth`` each ``(N, C, K)``."""
    rel = points[:, None, :, :] - rig.position[None, :, None, :]  # (N, C, K, 3)
    depth = np.einsum("nckd,cd->nck", rel, rig.forward)
    x = np.einsum("nckd,cd->nck", rel, rig.right)
    y = np.einsum("nckd,cd->nck", rel, rig.up)
    safe = np.maximum(depth, 1e-3)
    f = rig.focal[None, :, None]
    return SENSOR_WIDTH / 2 + f * x / safe, SENSOR_HEIGHT / 2 - f * y / safe, depth
