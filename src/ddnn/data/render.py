"""Vectorized ray casting of camera crops of :mod:`ddnn.data.scene` scenes into small RGB images.

Each view is a square crop window on one camera's sensor; one ray per output pixel goes through the
crop window and is intersected (slab method for boxes, a quadratic for cylinders) with the object's
parts, the occluders that project into the window, and the ground plane. Work is batched over views
with plain element-wise numpy, so results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np

from ddnn.data.scene import (
    BOX,
    PART_KINDS,
    ROAD_HALF_WIDTH,
    SENSOR_HEIGHT,
    SENSOR_WIDTH,
    SIDEWALK_WIDTH,
    CameraRig,
    Scenes,
    box_corners,
)

_RAYS_PER_CHUNK = 1 << 17  # chunks that stay in cache are faster than one big batch
_BLUR_RADIUS = 4
# Ground albedo of asphalt, sidewalk tiles, grass and lane paint.
_GROUND_ALBEDO = np.array(
    [[0.3, 0.3, 0.32], [0.6, 0.58, 0.54], [0.28, 0.42, 0.2], [0.85, 0.85, 0.85]]
)
Arr = np.ndarray
Vec = tuple[Arr, Arr, Arr]


def _rotate(v: Vec, yaw: Arr) -> Vec:
    """Rotate vectors by ``-yaw`` about ``z`` (world to a frame yawed by ``yaw``)."""
    c, s = np.cos(yaw).astype(np.float32), np.sin(yaw).astype(np.float32)
    return c * v[0] + s * v[1], c * v[1] - s * v[0], v[2]


def _box_hit(o: Vec, d: Vec, half: Arr, light: Vec) -> tuple[Arr, Arr]:
    """Slab test of rays ``o + t d`` against boxes centred at the origin of their own frame.

    Args:
        o: ray origins, each ``(V, 1)``. d: ray directions, each ``(V, R)``.
        half: ``(V, 3)`` half extents. light: sun direction in the box frame, each ``(V, 1)``.

    Returns:
        Hit distance ``(V, R)`` (``inf`` on a miss) and the cosine between face normal and sun.
    """
    t_near = np.full(d[0].shape, -np.inf, np.float32)
    t_far = np.full(d[0].shape, np.inf, np.float32)
    shade = np.zeros(d[0].shape, np.float32)
    for k in range(3):
        inv = 1.0 / np.where(np.abs(d[k]) < 1e-12, np.float32(1e-12), d[k])
        mid = -o[k] * inv  # the slab [-h, h] along axis k is crossed over mid -/+ reach
        reach = half[:, k : k + 1] * np.abs(inv)
        near = mid - reach
        entered = near > t_near
        np.copyto(shade, np.where(d[k] > 0, -light[k], light[k]), where=entered)  # face normal
        np.maximum(t_near, near, out=t_near)
        np.minimum(t_far, mid + reach, out=t_far)
    hit = (t_near <= t_far) & (t_near > 0)
    return np.where(hit, t_near, np.inf), shade


def _cylinder_hit(o: Vec, d: Vec, half: Arr, light: Vec) -> tuple[Arr, Arr]:
    """Like :func:`_box_hit` for vertical elliptic cylinders with half extents ``(rx, ry, hz)``."""
    rx, ry, hz = half[:, 0:1], half[:, 1:2], half[:, 2:3]
    ox, oy, dx, dy = o[0] / rx, o[1] / ry, d[0] / rx, d[1] / ry
    a = dx * dx + dy * dy
    b = 2 * (ox * dx + oy * dy)
    c = ox * ox + oy * oy - 1
    disc = b * b - 4 * a * c
    t_side = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(2 * a, 1e-12)
    ok = (disc > 0) & (t_side > 0) & (np.abs(o[2] + t_side * d[2]) <= hz)
    t = np.where(ok, t_side, np.inf)
    px, py = ox + t_side * dx, oy + t_side * dy
    nx, ny = px / rx, py / ry
    shade = (nx * light[0] + ny * light[1]) / np.sqrt(nx * nx + ny * ny + 1e-12)
    for sign in (1.0, -1.0):
        t_cap = (sign * hz - o[2]) / d[2]
        qx, qy = ox + t_cap * dx, oy + t_cap * dy
        cap = (t_cap > 0) & (qx * qx + qy * qy <= 1) & (t_cap < t)
        t = np.where(cap, t_cap, t)
        shade = np.where(cap, sign * light[2], shade)
    return t, shade


def _ground_colour(x: Arr, y: Arr) -> Arr:
    """Albedo ``(3, ...)`` of the fixed world ground: crossing roads with lane marks, sidewalks, grass."""
    ax, ay = np.abs(x), np.abs(y)
    road = np.minimum(ax, ay) < ROAD_HALF_WIDTH
    walk = ~road & (np.minimum(ax, ay) < ROAD_HALF_WIDTH + SIDEWALK_WIDTH)
    mark = (((ay < 0.12) & (x % 6 < 3)) | ((ax < 0.12) & (y % 6 < 3))) & (np.maximum(ax, ay) > 5)
    checker = (np.floor(x) + np.floor(y)) % 2
    grain = 0.04 * np.sin(3.1 * x + 1.7 * y) * np.sin(2.3 * y - 0.9 * x)
    cat = np.where(mark, 3, np.where(road, 0, np.where(walk, 1, 2)))
    mult = (1 + grain) * np.where(walk, 0.95 + 0.1 * checker, 1.0)
    return np.stack([np.take(_GROUND_ALBEDO[:, k], cat) * mult for k in range(3)]).astype(
        np.float32
    )


def _gaussian_weights(sigma: Arr) -> Arr:
    """``(V, 2r+1)`` normalized Gaussian taps for per-view blur widths ``sigma`` (pixels)."""
    x = np.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=np.float32)
    w = np.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _blur(img: Arr, sigma: Arr) -> Arr:
    """Separable Gaussian blur of ``(V, 3, S, S)`` images, one width per view, edges replicated."""
    w = _gaussian_weights(sigma)[:, None, None, :]  # (V, 1, 1, K)
    s = img.shape[-1]
    r = _BLUR_RADIUS
    pad = np.pad(img, ((0, 0), (0, 0), (0, 0), (r, r)), mode="edge")
    out = sum(w[..., k : k + 1] * pad[..., k : k + s] for k in range(2 * r + 1))
    pad = np.pad(out, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
    wt = w.transpose(0, 1, 3, 2)  # (V, 1, K, 1)
    return sum(wt[:, :, k : k + 1] * pad[:, :, k : k + s] for k in range(2 * r + 1))


class _Frame:
    """Running depth and colour buffers for a chunk of views."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.t = np.full(shape, np.inf, np.float32)
        self.rgb = np.zeros((3, *shape), np.float32)
        self.is_obj = np.zeros(shape, bool)

    def update(
        self, idx: Arr | None, t: Arr, colour: Arr, shade: Arr, ambient: Arr, obj: bool
    ) -> None:
        """Keep the nearer of the stored surface and ``t``, for the views ``idx`` (None: all)."""
        light = ambient + (1 - ambient) * np.maximum(shade, 0)
        if idx is None:
            near = t < self.t
            np.copyto(self.t, t, where=near)
            for k in range(3):
                np.copyto(self.rgb[k], colour[:, k : k + 1] * light, where=near)
            np.copyto(self.is_obj, obj, where=near)
            return
        sub_t, sub_rgb, sub_obj = self.t[idx], self.rgb[:, idx], self.is_obj[idx]
        near = t < sub_t
        np.copyto(sub_t, t, where=near)
        for k in range(3):
            np.copyto(sub_rgb[k], colour[:, k : k + 1] * light, where=near)
        np.copyto(sub_obj, obj, where=near)
        self.t[idx], self.rgb[:, idx], self.is_obj[idx] = sub_t, sub_rgb, sub_obj


def _render_chunk(
    sc: Scenes, rig: CameraRig, s: Arr, c: Arr, crop: Arr, size: int
) -> tuple[Arr, Arr]:
    """Ray-cast views of scenes ``s`` from cameras ``c``; all views must show the same class."""
    v = len(s)
    f32 = np.float32
    g = (np.arange(size, dtype=f32) + 0.5) / size
    cols = (crop[:, 0:1] + g * crop[:, 2:3] - SENSOR_WIDTH / 2) / rig.focal[c, None]  # (V, S)
    rows = -(crop[:, 1:2] + g * crop[:, 2:3] - SENSOR_HEIGHT / 2) / rig.focal[c, None]
    comps = []
    for k in range(3):
        dk = rig.forward[c, k, None, None] + cols[:, None, :] * rig.right[c, k, None, None]
        comps.append((dk + rows[:, :, None] * rig.up[c, k, None, None]).reshape(v, -1))
    norm = np.sqrt(sum(x * x for x in comps))
    dx, dy, dz = (np.where(np.abs(x / norm) < 1e-7, 1e-7, x / norm).astype(f32) for x in comps)
    d: Vec = (dx, dy, dz)
    o_world = rig.position[c].astype(f32)  # (V, 3)
    frame = _Frame(d[0].shape)
    amb = sc.ambient[s, None].astype(f32)
    sun = sc.sun[s].astype(f32)

    # Object parts, in the object's frame.
    yaw = sc.obj_yaw[s, None]
    rel = o_world - sc.obj_pos[s].astype(f32)
    o_obj = _rotate((rel[:, 0:1], rel[:, 1:2], rel[:, 2:3]), yaw)
    d_obj = _rotate(d, yaw)
    l_obj = _rotate((sun[:, 0:1], sun[:, 1:2], sun[:, 2:3]), yaw)
    for p, kind in enumerate(PART_KINDS[sc.cls[s[0]]]):
        ctr = sc.part_center[s, p].astype(f32)
        o_p = (o_obj[0] - ctr[:, 0:1], o_obj[1] - ctr[:, 1:2], o_obj[2] - ctr[:, 2:3])
        hit = _box_hit if kind == BOX else _cylinder_hit
        t, shade = hit(o_p, d_obj, sc.part_half[s, p].astype(f32), l_obj)
        frame.update(None, t, sc.part_colour[s, p].astype(f32), shade, amb, True)
    obj_pixels = np.isfinite(frame.t).sum(1)

    # Occluders whose projected bounding box overlaps the crop window.
    corners = box_corners(sc.occ_center[s], sc.occ_half[s], sc.occ_yaw[s], np.zeros(3))
    rel_c = corners - rig.position[c][:, None, None, :]  # (V, M, 8, 3)
    depth = np.einsum("vmkd,vd->vmk", rel_c, rig.forward[c])
    u = np.einsum("vmkd,vd->vmk", rel_c, rig.right[c]) / np.maximum(depth, 1e-3)
    w = np.einsum("vmkd,vd->vmk", rel_c, rig.up[c]) / np.maximum(depth, 1e-3)
    u = SENSOR_WIDTH / 2 + rig.focal[c, None, None] * u
    w = SENSOR_HEIGHT / 2 - rig.focal[c, None, None] * w
    behind = (depth <= 1e-3).any(-1)
    lo_u, hi_u = crop[:, 0:1], crop[:, 0:1] + crop[:, 2:3]
    lo_v, hi_v = crop[:, 1:2], crop[:, 1:2] + crop[:, 2:3]
    overlap = (u.max(-1) >= lo_u) & (u.min(-1) <= hi_u) & (w.max(-1) >= lo_v) & (w.min(-1) <= hi_v)
    relevant = sc.occ_active[s] & (depth.max(-1) > 0) & (overlap | behind)
    for m in range(relevant.shape[1]):
        for kind, hit in ((BOX, _box_hit), (1 - BOX, _cylinder_hit)):
            idx = np.flatnonzero(relevant[:, m] & (sc.occ_kind[s, m] == kind))
            if len(idx) == 0:
                continue
            si, oy = s[idx], sc.occ_yaw[s[idx], m, None]
            rel = o_world[idx] - sc.occ_center[si, m].astype(f32)
            o_m = _rotate((rel[:, 0:1], rel[:, 1:2], rel[:, 2:3]), oy)
            d_m = _rotate((d[0][idx], d[1][idx], d[2][idx]), oy)
            l_m = _rotate((sun[idx, 0:1], sun[idx, 1:2], sun[idx, 2:3]), oy)
            t, shade = hit(o_m, d_m, sc.occ_half[si, m].astype(f32), l_m)
            frame.update(idx, t, sc.occ_colour[si, m].astype(f32), shade, amb[idx], False)
    visible = (frame.is_obj & np.isfinite(frame.t)).sum(1)

    # Ground plane with a tiled texture, then sky; distant surfaces fade into haze.
    t_g = np.where(d[2] < 0, -o_world[:, 2:3] / d[2], np.inf)
    ground = t_g < frame.t
    t_safe = np.where(ground, t_g, 0)
    gx, gy = o_world[:, 0:1] + t_safe * d[0], o_world[:, 1:2] + t_safe * d[1]
    tex = _ground_colour(gx, gy)  # (3, V, R)
    light_g = amb + (1 - amb) * sun[:, 2:3]
    frame.t = np.where(ground, t_g, frame.t)
    sky = sc.sky[s].astype(f32)
    haze = np.exp(-np.where(np.isfinite(frame.t), frame.t, 1e6) / sc.fog[s, None].astype(f32))
    rgb = np.empty((v, 3, d[0].shape[1]), f32)
    for k in range(3):
        col = np.where(ground, tex[k] * light_g, frame.rgb[k])
        sky_k = sky[:, k : k + 1] * (0.85 + 0.3 * np.maximum(d[2], 0))
        rgb[:, k] = haze * col + (1 - haze) * sky_k
    return rgb.reshape(v, 3, size, size), visible / np.maximum(obj_pixels, 1)


def render_views(
    scenes: Scenes,
    rig: CameraRig,
    sample: Arr,
    camera: Arr,
    crop: Arr,
    size: int,
    noise_std: float,
    rng: np.random.Generator,
) -> tuple[Arr, Arr]:
    """Render ``V`` views: the crop window ``crop[i] = (u0, v0, side)`` of camera ``camera[i]``.

    Returns:
        Images ``(V, 3, size, size)`` float32 in [0, 1], quantized to 8 bits like a real camera, and
        the fraction of the object's pixels in each crop that no occluder hides.
    """
    nv = len(sample)
    images = np.zeros((nv, 3, size, size), np.float32)
    visible = np.zeros(nv, np.float32)
    order = np.argsort(scenes.cls[sample], kind="stable")
    cls_sorted = scenes.cls[sample][order]
    step = max(1, _RAYS_PER_CHUNK // (size * size))
    for cl in np.unique(cls_sorted):
        members = order[cls_sorted == cl]
        for start in range(0, len(members), step):
            idx = members[start : start + step]
            img, visible[idx] = _render_chunk(
                scenes, rig, sample[idx], camera[idx], crop[idx], size
            )
            images[idx] = _camera_pipeline(
                img, crop[idx, 2], noise_std * rig.noise[camera[idx]], rng
            )
    return images, visible


def _camera_pipeline(img: Arr, side: Arr, noise: Arr, rng: np.random.Generator) -> Arr:
    """Exposure and white balance, optics/resolution blur, sensor noise and 8-bit quantization."""
    nv, size = len(img), img.shape[-1]
    gain = rng.uniform(0.85, 1.15, (nv, 1)) * rng.uniform(0.95, 1.05, (nv, 3))
    img = img * gain.astype(np.float32)[:, :, None, None]
    # A crop smaller than the output was upsampled: blur by the sensor pixel footprint.
    sigma = np.sqrt(0.3**2 + (0.5 * size / np.maximum(side, 1.0)) ** 2).astype(np.float32)
    img = _blur(img, sigma)
    img += (
        rng.standard_normal(img.shape, dtype=np.float32)
        * noise.astype(np.float32)[:, None, None, None]
    )
    return (np.round(np.clip(img, 0.0, 1.0) * 255) / 255).astype(np.float32)
