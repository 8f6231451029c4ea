"""The latent scene model: parameters, seeded sampling, and the two known-cause targets.

Coordinates: the ego camera looks down the road; `x` is lateral (metres, positive to the right),
`z` is distance ahead (metres). The ego-lane centre runs at `x_c(z) = -offset + heading·z + curvature·z²/2`.
See `datasets/SYNTHETIC.md` for which classes are causal, correlated or independent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradsum.truthsets.base import CauseDeclaration

#: Camera height above the road (m); the focal length is `FOCAL · W` pixels, the horizon at `HORIZON · H`.
CAMERA_HEIGHT = 1.5
FOCAL = 0.5
HORIZON = 0.42
LANE_WIDTH = 3.5
#: The ego lane spans x_c ± LANE_WIDTH/2; the oncoming lane lies left of it.
EGO_HALF = LANE_WIDTH / 2
ROAD_LEFT = -EGO_HALF - LANE_WIDTH
#: Pure pursuit looks this far ahead (m).
LOOK_AHEAD = 15.0
#: `obstacle` = 1 exactly when a car or person stands in the ego lane at z ≤ this distance (m) …
OBSTACLE_DISTANCE = 15.0
#: Obstacles stand 5–13 m ahead and other ego-lane objects at ≥ 19 m: the 15 m threshold sits in an empty
#: band, so one pixel row (≈1.5 m at 15 m) cannot blur the label.
OBSTACLE_RANGE = (5.0, 13.0)
FAR_EGO_START = 19.0
CURVATURE_RANGE = 0.02
HEADING_RANGE = 0.05
OFFSET_RANGE = 0.6
#: The largest pursuit curvature the ranges allow: steering = pursuit curvature / STEERING_SCALE ∈ [-1, 1].
STEERING_SCALE = CURVATURE_RANGE + 2 * HEADING_RANGE / LOOK_AHEAD + 2 * OFFSET_RANGE / LOOK_AHEAD**2
SPEED_RANGE = (8.0, 20.0)
#: Width of a pole (m) and side of the square traffic sign it may carry at its top (m).
POLE_WIDTH = 0.14
SIGN_SIZE = 0.75
#: The oncoming lane's centre, lateral from the ego-lane centre.
ONCOMING = -EGO_HALF - LANE_WIDTH / 2

#: The classes the renderer draws, by Cityscapes name (ids: road 7, sidewalk 8, building 11, pole 17,
#: traffic sign 20, vegetation 21, terrain 22, sky 23, person 24, car 26).
CLASSES = (
    "road",
    "sidewalk",
    "building",
    "pole",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "car",
)
#: The classes the scene model makes causal for each task, and those it keeps independent of it (sky is
#: independent except under a planted shortcut, which only a train split can carry; see SYNTHETIC.md).
CAUSES: dict[str, CauseDeclaration] = {
    "steering": CauseDeclaration(causal=("road",), independent=("sky", "building", "vegetation")),
    "obstacle": CauseDeclaration(causal=("car", "person"), independent=("sky", "building", "vegetation")),
}
#: Classes a counterfactual may remove; removed pixels show what is behind them (road: the terrain beneath,
#: markings included).
REMOVABLE = ("car", "person", "pole", "traffic sign", "building", "vegetation", "sidewalk", "road")
#: How `erase` takes each rendered class out of a scene: "removed" (what is behind shows) or, for the
#: classes nothing stands behind, "repainted" with the same class's colour and texture from a donor scene.
ERASURE: dict[str, str] = {name: "removed" if name in REMOVABLE else "repainted" for name in CLASSES}

_BASE_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (92, 92, 98),
    "sidewalk": (162, 152, 146),
    "building": (150, 122, 102),
    "pole": (112, 112, 116),
    "traffic sign": (200, 50, 45),
    "vegetation": (62, 112, 52),
    "terrain": (122, 138, 82),
    "sky": (140, 178, 218),
    "person": (70, 60, 120),
    "car": (40, 70, 160),
}
_CAR_COLOURS = ((200, 30, 30), (30, 60, 170), (220, 220, 225), (30, 30, 35), (150, 150, 155), (20, 110, 60))
_SIGN_COLOURS = ((200, 40, 40), (30, 80, 180), (235, 200, 40))


@dataclass(frozen=True)
class SceneObject:
    """A car or person standing on the ground at distance `z`, lateral `lateral` from the ego-lane centre."""

    cls: str
    z: float
    lateral: float
    width: float
    height: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Pole:
    """A roadside pole, optionally carrying a traffic sign of colour `sign`."""

    z: float
    lateral: float
    height: float
    sign: tuple[int, int, int] | None


@dataclass(frozen=True)
class Marking:
    """Paint on the road that follows the lane: where the lateral offset from the ego-lane centre lies
    within `width`/2 of `lateral`, from `near` to `far` metres ahead, in dashes `dash` metres long every
    `period` metres (shifted by `phase`). Labelled road, like every marking."""

    lateral: float
    width: float
    near: float
    far: float
    dash: float
    period: float
    phase: float


@dataclass(frozen=True)
class Building:
    """A building on the skyline, in screen fractions (independent of the road)."""

    left: float
    width: float
    height: float
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Tree:
    """A tree crown on the skyline, in screen fractions (independent of the road)."""

    centre: float
    radius: float
    lift: float


@dataclass(frozen=True)
class SceneParams:
    """Everything needed to re-render one frame exactly (saved in its scene JSON)."""

    height: int
    width: int
    texture_seed: int
    curvature: float
    offset: float
    heading: float
    speed: float
    dash_phase: float
    sidewalk_left: float
    sidewalk_right: float
    brightness: float
    #: ±1: the sky tint (warm/cool); the planted shortcut when it agrees with the steering sign
    sky_cue: int
    palette: dict[str, tuple[int, int, int]]
    objects: tuple[SceneObject, ...] = ()
    poles: tuple[Pole, ...] = ()
    buildings: tuple[Building, ...] = ()
    trees: tuple[Tree, ...] = ()
    #: classes left out when rendering (counterfactual removal): what is behind them shows
    removed: tuple[str, ...] = ()
    #: class → texture seed drawing that class's noise instead of `texture_seed` (erasure by repainting)
    class_texture_seeds: dict[str, int] = field(default_factory=dict)
    #: markings of other lanes (the difficulty ladder's clutter); the ego lane's own are always drawn
    markings: tuple[Marking, ...] = ()

    def replace(self, **changes: Any) -> SceneParams:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `from_dict(to_dict(p)) == p` (floats survive JSON exactly). `markings` is
        written only when there are some, so a scene without them has the JSON it had before they existed."""
        data = dataclasses.asdict(self)
        if not self.markings:
            del data["markings"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneParams:
        """Inverse of `to_dict`."""
        values = dict(data)
        values["palette"] = {k: _rgb(v) for k, v in data["palette"].items()}
        values["objects"] = tuple(SceneObject(**{**o, "colour": _rgb(o["colour"])}) for o in data["objects"])
        values["poles"] = tuple(
            Pole(**{**p, "sign": None if p["sign"] is None else _rgb(p["sign"])}) for p in data["poles"]
        )
        values["buildings"] = tuple(Building(**{**b, "colour": _rgb(b["colour"])}) for b in data["buildings"])
        values["trees"] = tuple(Tree(**t) for t in data["trees"])
        values["removed"] = tuple(data.get("removed", ()))
        values["class_texture_seeds"] = {
            str(k): int(v) for k, v in data.get("class_texture_seeds", {}).items()
        }
        values["markings"] = tuple(Marking(**m) for m in data.get("markings", ()))
        return cls(**values)


def _rgb(value: Any) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in value)
    return (r, g, b)


def lane_centre(params: SceneParams, z: np.ndarray | float) -> np.ndarray:
    """Lateral position (m) of the ego-lane centre at distance `z`."""
    z = np.asarray(z, dtype=np.float64)
    return -params.offset + params.heading * z + 0.5 * params.curvature * z * z


def pursuit_curvature(params: SceneParams) -> float:
    """Curvature of the arc that reaches the lane centre LOOK_AHEAD metres ahead (pure pursuit)."""
    return float(2.0 * lane_centre(params, LOOK_AHEAD) / LOOK_AHEAD**2)


def steering(params: SceneParams) -> float:
    """The `steering` target: pursuit curvature / STEERING_SCALE, in [-1, 1], positive = steer right."""
    return pursuit_curvature(params) / STEERING_SCALE


def in_ego_lane(obj: SceneObject) -> bool:
    """True when the object's centre stands inside the ego lane."""
    return abs(obj.lateral) < EGO_HALF


def visible_objects(params: SceneParams) -> tuple[SceneObject, ...]:
    """The objects a render shows (those of removed classes are left out)."""
    return tuple(o for o in params.objects if o.cls not in params.removed)


def obstacle_objects(params: SceneParams) -> tuple[SceneObject, ...]:
    """The visible cars and people standing in the ego lane within OBSTACLE_DISTANCE."""
    return tuple(o for o in visible_objects(params) if in_ego_lane(o) and o.z <= OBSTACLE_DISTANCE)


def obstacle(params: SceneParams) -> int:
    """The `obstacle` target: 1 when a car or person stands in the ego lane within OBSTACLE_DISTANCE."""
    return int(bool(obstacle_objects(params)))


def targets(params: SceneParams) -> dict[str, float]:
    """Both targets of a scene."""
    return {"steering": steering(params), "obstacle": float(obstacle(params))}


def vehicle(params: SceneParams) -> dict[str, float]:
    """The Cityscapes `vehicle.json` fields. Cityscapes' yaw rate is positive when turning left (ISO 8855)
    and the pursuit curvature positive to the right, so yawRate = −curvature × speed and the Cityscapes
    reader's `steering_from_yaw_rate` gives back steering × STEERING_SCALE."""
    return {"speed": params.speed, "yawRate": -pursuit_curvature(params) * params.speed}


def steering_sign(params: SceneParams) -> int:
    """+1 for steering ≥ 0 (right, the warm tint's side), −1 otherwise."""
    return 1 if steering(params) >= 0 else -1


def shortcut_agrees(params: SceneParams) -> bool:
    """Whether the sky tint agrees with the steering sign (warm = +1 = right)."""
    return params.sky_cue == steering_sign(params)


def with_tint(params: SceneParams, agrees: bool) -> SceneParams:
    """The same scene with the sky tint set to agree (or disagree) with the steering sign; nothing else
    changes, so a render differs from the original on sky pixels only, and only where the tint changed."""
    sign = steering_sign(params)
    return params.replace(sky_cue=sign if agrees else -sign)


def opposite_tint(params: SceneParams) -> SceneParams:
    """The same scene with the sky repainted in the other tint (the shortcut cue's counterfactual)."""
    return params.replace(sky_cue=-params.sky_cue)


def sky_cue(rng: np.random.Generator, steer: float, shortcut: float) -> int:
    """The sky tint: agrees with sign(steer) with probability `shortcut`; 0 means independent (50 %)."""
    sign = 1 if steer >= 0 else -1
    if shortcut <= 0.0:
        return sign if rng.random() < 0.5 else -sign
    return sign if rng.random() < shortcut else -sign


# --- sampling ---------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)
    return (r, g, b)


def _screen_box(
    params: SceneParams, z: float, lateral: float, width: float, height: float
) -> tuple[float, float, float, float]:
    f = FOCAL * params.width
    x = float(lane_centre(params, z)) + lateral
    u = params.width / 2 + f * x / z
    bottom = HORIZON * params.height + f * CAMERA_HEIGHT / z
    return (u - f * width / 2 / z, bottom - f * height / z, u + f * width / 2 / z, bottom)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] + 1 and b[0] < a[2] + 1 and a[1] < b[3] + 1 and b[1] < a[3] + 1


def _make_object(rng: np.random.Generator, cls: str, z: float, lateral: float) -> SceneObject:
    if cls == "car":
        colour = _jitter(rng, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], 15)
        return SceneObject(
            "car", z, lateral, float(rng.uniform(1.6, 1.9)), float(rng.uniform(1.3, 1.6)), colour
        )
    colour = _jitter(
        rng, (int(rng.integers(30, 220)), int(rng.integers(30, 220)), int(rng.integers(30, 220))), 0
    )
    return SceneObject(
        "person", z, lateral, float(rng.uniform(0.5, 0.65)), float(rng.uniform(1.6, 1.9)), colour
    )


def _distractors(rng: np.random.Generator) -> list[SceneObject]:
    """Cars and people that never count as obstacles: far in the ego lane, oncoming, or on the verge."""
    found: list[SceneObject] = []
    if rng.random() < 0.5:
        cls = "car" if rng.random() < 0.7 else "person"
        found.append(
            _make_object(rng, cls, float(rng.uniform(FAR_EGO_START, 45.0)), float(rng.uniform(-0.6, 0.6)))
        )
    for _ in range(int(rng.choice(3, p=[0.35, 0.4, 0.25]))):
        lateral = -EGO_HALF - LANE_WIDTH / 2 + float(rng.uniform(-0.3, 0.3))
        found.append(_make_object(rng, "car", float(rng.uniform(5.0, 50.0)), lateral))
    for _ in range(int(rng.integers(0, 3))):
        if rng.random() < 0.5:
            lateral = EGO_HALF + float(rng.uniform(0.5, 3.5))
        else:
            lateral = ROAD_LEFT - float(rng.uniform(0.5, 3.5))
        found.append(_make_object(rng, "person", float(rng.uniform(5.0, 35.0)), lateral))
    return found


def _place(
    params: SceneParams, candidate: SceneObject, placed: list[SceneObject]
) -> tuple[float, float, float, float] | None:
    box = _screen_box(params, candidate.z, candidate.lateral, candidate.width, candidate.height)
    for other in placed:
        if _overlaps(box, _screen_box(params, other.z, other.lateral, other.width, other.height)):
            return None
    return box


def _objects(rng: np.random.Generator, geometry: SceneParams) -> tuple[SceneObject, ...]:
    """Distractors first (independent of the label), then the obstacle with probability 1/2."""
    placed: list[SceneObject] = []
    for candidate in _distractors(rng):
        if _place(geometry, candidate, placed) is not None:
            placed.append(candidate)
    if rng.random() < 0.5:
        cls = "car" if rng.random() < 0.65 else "person"
        spread = 0.5 if cls == "car" else 1.2
        for _ in range(30):
            candidate = _make_object(
                rng, cls, float(rng.uniform(*OBSTACLE_RANGE)), float(rng.uniform(-spread, spread))
            )
            if _place(geometry, candidate, placed) is not None:
                break
        else:
            # Rare crowded scene: the label must stay balanced, so the distractors give way.
            placed = [o for o in placed if _place(geometry, o, [candidate]) is not None]
        placed.append(candidate)
    # Far to near, so nearer objects paint over farther ones.
    return tuple(sorted(placed, key=lambda o: -o.z))


def _poles(rng: np.random.Generator, left: float, right: float) -> tuple[Pole, ...]:
    poles = []
    for _ in range(int(rng.integers(0, 4))):
        if rng.random() < 0.6:
            lateral = EGO_HALF + right + float(rng.uniform(0.3, 1.5))
        else:
            lateral = ROAD_LEFT - left - float(rng.uniform(0.3, 1.5))
        sign = _SIGN_COLOURS[rng.integers(len(_SIGN_COLOURS))] if rng.random() < 0.6 else None
        poles.append(Pole(float(rng.uniform(6.0, 60.0)), lateral, float(rng.uniform(3.5, 5.0)), sign))
    return tuple(sorted(poles, key=lambda p: -p.z))


def _skyline(rng: np.random.Generator) -> tuple[tuple[Building, ...], tuple[Tree, ...]]:
    buildings = tuple(
        Building(
            float(rng.uniform(-0.1, 1.0)),
            float(rng.uniform(0.08, 0.3)),
            float(rng.uniform(0.15, 0.85)),
            _jitter(rng, _BASE_COLOURS["building"], 40),
        )
        for _ in range(int(rng.integers(0, 6)))
    )
    trees = tuple(
        Tree(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.03, 0.08)), float(rng.uniform(0.0, 0.5)))
        for _ in range(int(rng.integers(0, 7)))
    )
    return buildings, trees


def sample_scene(rng: np.random.Generator, size: tuple[int, int], shortcut: float = 0.0) -> SceneParams:
    """Draw one scene; `shortcut` is the probability that the sky tint agrees with the steering sign."""
    height, width = size
    left = float(rng.uniform(1.5, 3.0)) if rng.random() < 0.6 else 0.0
    right = float(rng.uniform(1.5, 3.0)) if rng.random() < 0.8 else 0.0
    geometry = SceneParams(
        height=height,
        width=width,
        texture_seed=int(rng.integers(2**31)),
        curvature=float(rng.uniform(-CURVATURE_RANGE, CURVATURE_RANGE)),
        offset=float(rng.uniform(-OFFSET_RANGE, OFFSET_RANGE)),
        heading=float(rng.uniform(-HEADING_RANGE, HEADING_RANGE)),
        speed=float(rng.uniform(*SPEED_RANGE)),
        dash_phase=float(rng.uniform(0.0, 6.0)),
        sidewalk_left=left,
        sidewalk_right=right,
        brightness=float(rng.uniform(0.8, 1.15)),
        sky_cue=1,
        palette={name: _jitter(rng, colour, 12) for name, colour in _BASE_COLOURS.items()},
    )
    buildings, trees = _skyline(rng)
    return geometry.replace(
        objects=_objects(rng, geometry),
        poles=_poles(rng, left, right),
        buildings=buildings,
        trees=trees,
        sky_cue=sky_cue(rng, steering(geometry), shortcut),
    )


# --- the difficulty ladder's scene knobs: occluders and clutter added to a sampled scene ---------------

#: An occluder at the kerb stands with its inner side up to this far (m) beyond the road's edge, never over
#: it: a car parked even 0.3 m over the ego lane's edge line (its centre still outside the lane, so no
#: obstacle) put car pixels on the ego lane's ground within 15 m in half of the negatives at level 3, and
#: "car or person pixels in the ego lane within 15 m ⇔ obstacle" is what the obstacle label shows.
KERB_GAP = 0.3
#: Occluders stand at the kerb this far ahead (m): near enough to hide the sidewalk and terrain along the
#: road and, on a bend, the road behind them.
KERB_RANGE = (4.0, 30.0)
#: A lead car stands in the ego lane from FAR_EGO_START to this many metres beyond it at level 1 (÷ level
#: at higher levels: nearer, so it hides more of the lane ahead).
LEAD_SPAN = 24.0
#: Clutter stands on the verges this far ahead (m) and this far beyond the road's edge (m).
CLUTTER_RANGE = (4.0, 45.0)
VERGE_RANGE = (0.3, 4.0)
#: Markings of other lanes keep this far (m) from the oncoming lane's sides, clear of the centre and
#: edge lines, so they never touch the ego lane's markings.
MARKING_MARGIN = 0.3


def _beside_road(side: int, width: float, gap: float) -> float:
    """The lateral of the centre of an object `width` wide whose inner side stands `gap` metres beyond the
    road's edge on `side` (+1: the right edge, the ego lane's; −1: the left edge, the oncoming lane's)."""
    edge = EGO_HALF if side > 0 else ROAD_LEFT
    return edge + side * (width / 2 + gap)


def _side(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.6 else -1


def _kerbside(rng: np.random.Generator) -> SceneObject | Pole:
    """A parked car, a person or a pole at the kerb, its inner side at most KERB_GAP beyond the road."""
    side, z = _side(rng), float(rng.uniform(*KERB_RANGE))
    kind = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    if kind == 2:
        lateral = _beside_road(side, POLE_WIDTH, float(rng.uniform(0.0, KERB_GAP)))
        return Pole(z, lateral, float(rng.uniform(3.5, 5.0)), None)
    obj = _make_object(rng, ("car", "person")[kind], z, 0.0)
    return dataclasses.replace(obj, lateral=_beside_road(side, obj.width, float(rng.uniform(0.0, KERB_GAP))))


def _hides_obstacle(params: SceneParams, item: SceneObject | Pole) -> bool:
    """Whether `item`, standing nearer than one of the scene's obstacles, would cover part of it on screen."""
    if isinstance(item, Pole):
        box = _screen_box(params, item.z, item.lateral, SIGN_SIZE if item.sign else POLE_WIDTH, item.height)
    else:
        box = _screen_box(params, item.z, item.lateral, item.width, item.height)
    return any(
        item.z < o.z and _overlaps(box, _screen_box(params, o.z, o.lateral, o.width, o.height))
        for o in obstacle_objects(params)
    )


def _add(params: SceneParams, items: list[SceneObject | Pole]) -> SceneParams:
    """The scene with `items` appended to its objects and poles (so every object keeps its instance id),
    leaving out any that would hide part of an obstacle. On the sampler's ranges nothing standing outside
    the ego lane can (datasets/SYNTHETIC.md works it out); the check keeps that true if the ranges move."""
    kept = [item for item in items if not _hides_obstacle(params, item)]
    objects = tuple(i for i in kept if isinstance(i, SceneObject))
    poles = tuple(i for i in kept if isinstance(i, Pole))
    return params.replace(objects=params.objects + objects, poles=params.poles + poles)


def occlude(params: SceneParams, level: int, rng: np.random.Generator) -> SceneParams:
    """The scene with occluders at `level` (1..3): 2·level parked cars, people and poles at the kerbs
    (`_kerbside`), a lead car in the ego lane beyond FAR_EGO_START (nearer at higher levels) and level − 1
    oncoming cars within 25 m. None is an obstacle; one that would hide part of an obstacle is left out."""
    items: list[SceneObject | Pole] = [_kerbside(rng) for _ in range(2 * level)]
    lead = float(rng.uniform(FAR_EGO_START, FAR_EGO_START + LEAD_SPAN / level))
    items.append(_make_object(rng, "car", lead, float(rng.uniform(-0.5, 0.5))))
    for _ in range(level - 1):
        items.append(
            _make_object(rng, "car", float(rng.uniform(5.0, 25.0)), ONCOMING + float(rng.uniform(-0.3, 0.3)))
        )
    return _add(params, items)


def _small(rng: np.random.Generator) -> SceneObject | Pole:
    """A child, a bollard or a small signpost on a verge, clear of the road."""
    side, z = _side(rng), float(rng.uniform(*CLUTTER_RANGE))
    kind = int(rng.choice(3, p=[0.4, 0.35, 0.25]))
    if kind == 0:
        child = _make_object(rng, "person", z, 0.0)
        width, height = float(rng.uniform(0.35, 0.45)), float(rng.uniform(1.0, 1.35))
        lateral = _beside_road(side, width, float(rng.uniform(*VERGE_RANGE)))
        return dataclasses.replace(child, lateral=lateral, width=width, height=height)
    lateral = _beside_road(side, POLE_WIDTH, float(rng.uniform(*VERGE_RANGE)))
    if kind == 1:
        return Pole(z, lateral, float(rng.uniform(0.8, 1.1)), None)
    return Pole(z, lateral, float(rng.uniform(2.0, 2.6)), _SIGN_COLOURS[rng.integers(len(_SIGN_COLOURS))])


def _marking(rng: np.random.Generator) -> Marking:
    """A marking inside the oncoming lane: a dashed line or a run of hatch bars."""
    if rng.random() < 0.5:
        width, dash, period = (
            float(rng.uniform(0.1, 0.15)),
            float(rng.uniform(1.5, 3.0)),
            float(rng.uniform(4.0, 9.0)),
        )
    else:
        width, dash, period = (
            float(rng.uniform(1.0, 2.0)),
            float(rng.uniform(0.3, 0.5)),
            float(rng.uniform(1.5, 3.0)),
        )
    room = LANE_WIDTH / 2 - MARKING_MARGIN - width / 2
    near = float(rng.uniform(3.0, 15.0))
    return Marking(
        lateral=ONCOMING + float(rng.uniform(-room, room)),
        width=width,
        near=near,
        far=near + float(rng.uniform(10.0, 40.0)),
        dash=dash,
        period=period,
        phase=float(rng.uniform(0.0, period)),
    )


def clutter(params: SceneParams, level: int, rng: np.random.Generator) -> SceneParams:
    """The scene with clutter at `level` (1..3): 3·level small objects on the verges (children, bollards,
    signposts: `_small`), level far cars in the oncoming lane (30–60 m) and level markings of the oncoming
    lane (`_marking`). None stands in the ego lane; one that would hide part of an obstacle is left out."""
    items: list[SceneObject | Pole] = [_small(rng) for _ in range(3 * level)]
    for _ in range(level):
        items.append(
            _make_object(rng, "car", float(rng.uniform(30.0, 60.0)), ONCOMING + float(rng.uniform(-0.3, 0.3)))
        )
    markings = tuple(_marking(rng) for _ in range(level))
    return _add(params, items).replace(markings=params.markings + markings)
