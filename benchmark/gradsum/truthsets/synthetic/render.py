"""Vectorised numpy renderer: scene parameters → RGB image, Cityscapes label ids, object instances.

Layers are painted back to front (sky, skyline, ground, then poles and objects far to near). Every
texture field is drawn from `texture_seed` before any layer is painted, so a pixel's colour depends
only on what covers it: re-rendering with one class removed changes that class's pixels and no other.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gradsum.errors import GradSUMError
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS, cityscapes_class
from gradsum.truthsets.layout import INSTANCE_SCALE
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.scene import POLE_WIDTH, SIGN_SIZE, SceneObject, SceneParams

#: Cityscapes id of every rendered class.
IDS = {name: cityscapes_class(name).id for name in sc.CLASSES}

_MARKING = np.array((232, 232, 222), dtype=np.float32)
_WINDOW = np.array((48, 58, 72), dtype=np.float32)
_TYRE = np.array((24, 24, 26), dtype=np.float32)
_SKIN = np.array((214, 176, 146), dtype=np.float32)
_TRUNK = np.array((78, 58, 40), dtype=np.float32)
_SKY_TINT = {1: np.array((24, 6, -24), dtype=np.float32), -1: np.array((-20, 0, 24), dtype=np.float32)}


def _per_class(values: Mapping[str, float]) -> np.ndarray:
    table = np.zeros(NUM_CITYSCAPES_IDS, dtype=np.float32)
    for name, value in values.items():
        table[IDS[name]] = value
    return table


# Relative low-frequency shading and absolute pixel grain per class, so that no class is a flat colour.
_SHADE = _per_class(
    {"sky": 0.03, "road": 0.08, "sidewalk": 0.08, "terrain": 0.15, "vegetation": 0.22, "building": 0.1}
    | {"pole": 0.08, "traffic sign": 0.05, "car": 0.05, "person": 0.06}
)
_GRAIN = _per_class(
    {"sky": 2.0, "road": 7.0, "sidewalk": 6.0, "terrain": 10.0, "vegetation": 14.0, "building": 6.0}
    | {"pole": 4.0, "traffic sign": 3.0, "car": 4.0, "person": 5.0}
)


@dataclass
class Rendered:
    """One rendered frame; `instances` are Cityscapes instance ids (see `instance_ids`)."""

    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8 Cityscapes ids
    instances: np.ndarray  # (H, W) int32: instance id on car/person pixels, the class id elsewhere
    params: SceneParams

    @property
    def targets(self) -> dict[str, float]:
        """Both targets of the rendered scene."""
        return sc.targets(self.params)


class _Canvas:
    """Label, colour and instance buffers plus the classes to leave out."""

    def __init__(self, params: SceneParams) -> None:
        h, w = params.height, params.width
        self.params = params
        self.labels = np.full((h, w), IDS["sky"], dtype=np.uint8)
        self.colour = np.empty((h, w, 3), dtype=np.float32)
        #: instance id of the object covering each pixel, 0 where none does
        self.instances = np.zeros((h, w), dtype=np.int32)
        self.horizon = sc.HORIZON * h
        self.focal = sc.FOCAL * w

    def paint(
        self, rows: slice, cols: slice, mask: np.ndarray | None, cls: str, colour: Any, instance: int = 0
    ) -> None:
        """Paint `cls` with `colour` over the window (rows, cols), where `mask` holds (all when None)."""
        if cls in self.params.removed:
            return
        labels = self.labels[rows, cols]
        paint = np.ones(labels.shape, dtype=bool) if mask is None else mask
        labels[paint] = IDS[cls]
        self.colour[rows, cols][paint] = colour
        self.instances[rows, cols][paint] = instance

    def box(self, z: float, x: float, width: float, height: float) -> tuple[slice, slice] | None:
        """Pixel window of a billboard standing at (x, z), at least one pixel wide; None when off-screen."""
        h, w = self.labels.shape
        u = w / 2 + self.focal * x / z
        half = self.focal * width / 2 / z
        bottom = self.horizon + self.focal * sc.CAMERA_HEIGHT / z
        c0, c1 = int(np.floor(u - half + 0.5)), int(np.floor(u + half + 0.5))
        r1 = int(np.floor(bottom + 0.5))
        r0 = int(np.floor(bottom - self.focal * height / z + 0.5))
        c1, r0 = max(c1, c0 + 1), min(r0, r1 - 1)
        c0, c1, r0, r1 = max(c0, 0), min(c1, w), max(r0, 0), min(r1, h)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


def _sky(canvas: _Canvas) -> None:
    p = canvas.params
    h = p.height
    base = np.asarray(p.palette["sky"], dtype=np.float32) + _SKY_TINT[p.sky_cue]
    # Lighter towards the horizon, as in daylight.
    lift = np.clip(np.arange(h, dtype=np.float32) / max(canvas.horizon, 1.0), 0.0, 1.0) * 30.0
    canvas.colour[:] = (base[None, :] + lift[:, None])[:, None, :]


def _skyline(canvas: _Canvas) -> None:
    p = canvas.params
    w = p.width
    top_row = int(np.ceil(canvas.horizon))
    for b in p.buildings:
        c0, c1 = max(int(b.left * w), 0), min(int(np.ceil((b.left + b.width) * w)), w)
        r0 = max(int(canvas.horizon * (1.0 - b.height)), 0)
        if c0 >= c1 or r0 >= top_row:
            continue
        rows, cols = slice(r0, top_row), slice(c0, c1)
        rr = np.arange(r0, top_row)[:, None] - r0
        cc = np.arange(c0, c1)[None, :] - c0
        windows = ((rr % 5) >= 2) & ((rr % 5) <= 3) & ((cc % 4) >= 1) & ((cc % 4) <= 2)
        canvas.paint(rows, cols, None, "building", b.colour)
        canvas.paint(rows, cols, windows, "building", np.asarray(b.colour, dtype=np.float32) * 0.55)
    for t in p.trees:
        radius = t.radius * w
        cx = t.centre * w
        cy = canvas.horizon - radius - t.lift * canvas.horizon * 0.5
        r0, r1 = max(int(cy - radius), 0), min(int(np.ceil(cy + radius)) + 1, top_row)
        c0, c1 = max(int(cx - radius), 0), min(int(np.ceil(cx + radius)) + 1, w)
        if r0 < r1 and c0 < c1:
            dy = np.arange(r0, r1)[:, None] + 0.5 - cy
            dx = np.arange(c0, c1)[None, :] + 0.5 - cx
            crown = dy**2 + dx**2 < radius**2
            canvas.paint(slice(r0, r1), slice(c0, c1), crown, "vegetation", p.palette["vegetation"])
        trunk_half = max(radius * 0.12, 0.5)
        t0, t1 = max(int(cx - trunk_half + 0.5), 0), min(int(cx + trunk_half + 0.5), w)
        trunk_top = max(int(cy + radius * 0.7), 0)
        if t0 < t1 and trunk_top < top_row:
            canvas.paint(slice(trunk_top, top_row), slice(t0, t1), None, "vegetation", _TRUNK)


def _ground(canvas: _Canvas) -> None:
    p = canvas.params
    h, w = p.height, p.width
    first = int(np.floor(canvas.horizon + 0.5))
    if first >= h:
        return
    centres = np.arange(first, h, dtype=np.float64) + 0.5
    z = canvas.focal * sc.CAMERA_HEIGHT / np.maximum(centres - canvas.horizon, 1e-3)
    x = (np.arange(w, dtype=np.float64) + 0.5 - w / 2) / canvas.focal
    rel = x[None, :] * z[:, None] - sc.lane_centre(p, z)[:, None]
    rows, cols = slice(first, h), slice(0, w)
    zz = z[:, None]
    canvas.paint(rows, cols, None, "terrain", p.palette["terrain"])
    right = (rel > sc.EGO_HALF) & (rel <= sc.EGO_HALF + p.sidewalk_right)
    left = (rel < sc.ROAD_LEFT) & (rel >= sc.ROAD_LEFT - p.sidewalk_left)
    slabs = np.broadcast_to((zz % 1.2) < 0.12, rel.shape)
    canvas.paint(rows, cols, right | left, "sidewalk", p.palette["sidewalk"])
    canvas.paint(rows, cols, (right | left) & slabs, "sidewalk", np.asarray(p.palette["sidewalk"]) * 0.8)
    road = (rel >= sc.ROAD_LEFT) & (rel <= sc.EGO_HALF)
    canvas.paint(rows, cols, road, "road", p.palette["road"])
    dashed = ((zz + p.dash_phase) % 6.0) < 3.0
    centre_line = (np.abs(rel + sc.EGO_HALF) < 0.1) & dashed
    edges = ((rel > sc.EGO_HALF - 0.2) | (rel < sc.ROAD_LEFT + 0.2)) & road
    canvas.paint(rows, cols, centre_line | edges, "road", _MARKING)
    for m in p.markings:
        stripe = (np.abs(rel - m.lateral) < m.width / 2) & (((zz + m.phase) % m.period) < m.dash)
        canvas.paint(rows, cols, stripe & (zz >= m.near) & (zz <= m.far) & road, "road", _MARKING)


def _pole(canvas: _Canvas, pole: sc.Pole) -> None:
    x = float(sc.lane_centre(canvas.params, pole.z)) + pole.lateral
    window = canvas.box(pole.z, x, POLE_WIDTH, pole.height)
    if window is not None:
        canvas.paint(*window, None, "pole", canvas.params.palette["pole"])
    if pole.sign is None:
        return
    sign = canvas.box(pole.z, x, SIGN_SIZE, SIGN_SIZE)
    if sign is None:
        return
    # Lift the sign to the top of the pole.
    lift = int(np.floor(canvas.focal * (pole.height - SIGN_SIZE) / pole.z + 0.5))
    r0, r1 = max(sign[0].start - lift, 0), max(sign[0].stop - lift, 0)
    if r0 < r1:
        canvas.paint(slice(r0, r1), sign[1], None, "traffic sign", pole.sign)


def _object(canvas: _Canvas, obj: SceneObject, instance: int) -> None:
    if obj.cls in canvas.params.removed:
        return
    x = float(sc.lane_centre(canvas.params, obj.z)) + obj.lateral
    window = canvas.box(obj.z, x, obj.width, obj.height)
    if window is None:
        return
    rows, cols = window
    n, m = rows.stop - rows.start, cols.stop - cols.start
    rr = (np.arange(n)[:, None] + 0.5) / n
    cc = (np.arange(m)[None, :] + 0.5) / m
    shape = _OBJECT_SHAPES[obj.cls]
    for part, colour in shape(rr, cc, np.asarray(obj.colour, dtype=np.float32)):
        canvas.paint(rows, cols, part, obj.cls, colour, instance)


def _car_parts(rr: np.ndarray, cc: np.ndarray, colour: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    body = np.broadcast_to(rr >= 0.4, (rr.shape[0], cc.shape[1]))
    cabin = (rr < 0.4) & (np.abs(cc - 0.5) < 0.36)
    wheels = (rr >= 0.82) & (np.abs(cc - 0.5) > 0.22)
    lights = (rr >= 0.5) & (rr < 0.62) & (np.abs(cc - 0.5) > 0.36)
    return [(body, colour), (cabin, _WINDOW), (wheels, _TYRE), (lights, colour * 0.5 + 110.0)]


def _person_parts(rr: np.ndarray, cc: np.ndarray, colour: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    head = (rr < 0.15) & (np.abs(cc - 0.5) < 0.3)
    torso = np.broadcast_to((rr >= 0.15) & (rr < 0.55), (rr.shape[0], cc.shape[1]))
    legs = (rr >= 0.55) & (np.abs(cc - 0.5) > 0.06) & (np.abs(cc - 0.5) < 0.42)
    return [(head, _SKIN), (torso, colour), (legs, colour * 0.35 + 15.0)]


_OBJECT_SHAPES = {"car": _car_parts, "person": _person_parts}


def _compose(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    p = canvas.params
    low, grain = _noise_fields(rng, p.height, p.width)
    # A class repainted from a donor takes the donor's noise on its own pixels only.
    for cls, seed in sorted(p.class_texture_seeds.items()):
        own = canvas.labels == IDS[cls]
        donor_low, donor_grain = _noise_fields(np.random.default_rng(seed), p.height, p.width)
        low[own], grain[own] = donor_low[own], donor_grain[own]
    shade = 1.0 + _SHADE[canvas.labels] * low
    image = canvas.colour * (p.brightness * shade)[..., None] + (_GRAIN[canvas.labels] * grain)[..., None]
    return np.clip(image + 0.5, 0.0, 255.0).astype(np.uint8)


def _noise_fields(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth (bilinear from an 8-pixel grid) and per-pixel standard-normal fields."""
    coarse = rng.standard_normal((h // 8 + 2, w // 8 + 2)).astype(np.float32)
    grain = rng.standard_normal((h, w), dtype=np.float32)
    ry, rx = (np.arange(h) + 0.5) / 8.0, (np.arange(w) + 0.5) / 8.0
    y0, x0 = ry.astype(np.int64), rx.astype(np.int64)
    fy, fx = (ry - y0).astype(np.float32)[:, None], (rx - x0).astype(np.float32)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy, grain


def render(params: SceneParams) -> Rendered:
    """Render a scene exactly as its parameters say (deterministic: same parameters, same pixels)."""
    rng = np.random.default_rng(params.texture_seed)
    canvas = _Canvas(params)
    _sky(canvas)
    _skyline(canvas)
    _ground(canvas)
    billboards: list[tuple[float, int, Any]] = [(pole.z, 0, pole) for pole in params.poles]
    billboards += [(obj.z, k + 1, obj) for k, obj in enumerate(params.objects)]
    ids = instance_ids(params)
    for _, order, item in sorted(billboards, key=lambda b: (-b[0], b[1])):
        if order:
            _object(canvas, item, ids[order - 1])
        else:
            _pole(canvas, item)
    instances = np.where(canvas.instances > 0, canvas.instances, canvas.labels).astype(np.int32)
    return Rendered(_compose(canvas, rng), canvas.labels, instances, params)


def instance_ids(params: SceneParams) -> tuple[int, ...]:
    """The Cityscapes instance id of each of `params.objects`: class id · 1000 + k, where k counts that
    class's objects in `params.objects` order from 0 (removed objects keep their number)."""
    seen: dict[str, int] = {}
    ids = []
    for obj in params.objects:
        k = seen.get(obj.cls, 0)
        seen[obj.cls] = k + 1
        ids.append(IDS[obj.cls] * INSTANCE_SCALE + k)
    return tuple(ids)


def obstacle_instances(params: SceneParams) -> list[int]:
    """Instance ids of the objects that make `obstacle` = 1 (empty for negatives)."""
    obstacles = set(sc.obstacle_objects(params))
    return [i for obj, i in zip(params.objects, instance_ids(params), strict=True) if obj in obstacles]


def instance_records(params: SceneParams) -> dict[str, dict[str, Any]]:
    """JSON-ready instance table: id → class, distance z, lateral offset, and whether it is an obstacle."""
    obstacles = set(sc.obstacle_objects(params))
    return {
        str(i): {"class": obj.cls, "z": obj.z, "lateral": obj.lateral, "obstacle": obj in obstacles}
        for obj, i in zip(params.objects, instance_ids(params), strict=True)
    }


def _repaint(params: SceneParams, cls: str, colour: tuple[int, int, int]) -> SceneParams:
    changes: dict[str, Any] = {"palette": {**params.palette, cls: colour}}
    if cls in ("car", "person"):
        changes["objects"] = tuple(
            dataclasses.replace(o, colour=colour) if o.cls == cls else o for o in params.objects
        )
    elif cls == "building":
        changes["buildings"] = tuple(dataclasses.replace(b, colour=colour) for b in params.buildings)
    elif cls == "traffic sign":
        changes["poles"] = tuple(
            p if p.sign is None else dataclasses.replace(p, sign=colour) for p in params.poles
        )
    return params.replace(**changes)


def counterfactual_params(
    params: SceneParams,
    remove: str | tuple[str, ...] = (),
    repaint: Mapping[str, tuple[int, int, int]] | None = None,
    **changes: Any,
) -> SceneParams:
    """Parameters with classes removed, classes repainted, or latent factors (curvature, ...) changed."""
    removed = (remove,) if isinstance(remove, str) else tuple(remove)
    for name in removed:
        if name not in sc.REMOVABLE:
            raise GradSUMError(f"remove={name!r}: not a removable class; valid: {', '.join(sc.REMOVABLE)}")
    fields = {f.name for f in dataclasses.fields(SceneParams)} - {"height", "width", "removed"}
    for name in changes:
        if name not in fields:
            raise GradSUMError(
                f"counterfactual {name}=...: not a scene parameter; valid: {', '.join(sorted(fields))}"
            )
    out = params.replace(**changes, removed=tuple(sorted(set(params.removed) | set(removed))))
    for cls, colour in (repaint or {}).items():
        if cls not in sc.CLASSES:
            raise GradSUMError(f"repaint={cls!r}: not a rendered class; valid: {', '.join(sc.CLASSES)}")
        r, g, b = (int(c) for c in colour)
        out = _repaint(out, cls, (r, g, b))
    return out


#: Scene fields a repainted class takes from the donor besides its palette colour and texture.
_DONOR_FIELDS: dict[str, tuple[str, ...]] = {"sky": ("sky_cue",), "terrain": ()}


def erase_params(params: SceneParams, cls: str, donor_params: SceneParams | None = None) -> SceneParams:
    """Parameters with `cls` erased in-domain, as `sc.ERASURE[cls]` says.

    Removable classes are left out (what is behind shows: road → terrain, markings with it). Sky and
    terrain, which nothing stands behind, are repainted with `donor_params`' colour for that class (and,
    for sky, its tint `sky_cue`), their texture noise drawn from the donor's texture seed; every other
    pixel stays identical.
    """
    if cls not in sc.ERASURE:
        raise GradSUMError(f"erase cls={cls!r}: not a rendered class; valid: {', '.join(sc.CLASSES)}")
    if sc.ERASURE[cls] == "removed":
        return counterfactual_params(params, remove=cls)
    if donor_params is None:
        raise GradSUMError(f"erase cls={cls!r}: a repainted class needs donor_params (another scene)")
    donor_seed = donor_params.class_texture_seeds.get(cls, donor_params.texture_seed)
    changes: dict[str, Any] = {name: getattr(donor_params, name) for name in _DONOR_FIELDS[cls]}
    return params.replace(
        palette={**params.palette, cls: donor_params.palette[cls]},
        class_texture_seeds={**params.class_texture_seeds, cls: donor_seed},
        **changes,
    )


def placebo_params(params: SceneParams, cls: str) -> SceneParams:
    """Parameters with only `cls`'s texture noise redrawn: the in-domain placebo of erasing `cls`.

    Geometry, labels and palette stay, so the placebo changes the class's pixels without changing what
    the scene shows: a model's output change under it is the effect of texture alone, which the causal
    referee subtracts from the erasure effect. The new seed is derived from the
    scene's texture seed and the class name (deterministic), and differs from the one the class used.
    """
    if cls not in sc.CLASSES:
        raise GradSUMError(f"placebo cls={cls!r}: not a rendered class; valid: {', '.join(sc.CLASSES)}")
    current = params.class_texture_seeds.get(cls, params.texture_seed)
    seed = zlib.crc32(f"{params.texture_seed}\0placebo\0{cls}".encode())
    if seed == current:
        seed = (seed + 1) % 2**32
    return params.replace(class_texture_seeds={**params.class_texture_seeds, cls: seed})


def render_counterfactual(
    params: SceneParams,
    remove: str | tuple[str, ...] = (),
    repaint: Mapping[str, tuple[int, int, int]] | None = None,
    **changes: Any,
) -> Rendered:
    """Re-render a scene with one factor changed; pixels the change does not touch stay identical."""
    return render(counterfactual_params(params, remove, repaint, **changes))


def ego_lane_mask(params: SceneParams, distance: float = sc.OBSTACLE_DISTANCE) -> np.ndarray:
    """(H, W) bool: ground pixels of the ego lane no farther than `distance` (the obstacle region)."""
    h, w = params.height, params.width
    horizon, focal = sc.HORIZON * h, sc.FOCAL * w
    centres = np.arange(h, dtype=np.float64) + 0.5
    below = centres > horizon
    z = np.where(below, focal * sc.CAMERA_HEIGHT / np.maximum(centres - horizon, 1e-3), np.inf)
    x = (np.arange(w, dtype=np.float64) + 0.5 - w / 2) / focal
    rel = (
        x[None, :] * np.where(below, z, 0.0)[:, None]
        - sc.lane_centre(params, np.where(below, z, 0.0))[:, None]
    )
    return (np.abs(rel) < sc.EGO_HALF) & (z <= distance)[:, None]
