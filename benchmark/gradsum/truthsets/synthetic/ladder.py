"""The difficulty ladder's knobs: levels 0–3 that make a scene harder and keep its targets and causes exact.

Two kinds of knob, one registry (`KNOBS`, `gradsum generate --difficulty shadows=2`). A scene knob
(`Knob.place`: occlusion, clutter) adds objects and markings to a freshly sampled scene before it is
drawn; what it adds joins the scene's parameters, so the labels, instances, scene JSON and every re-render
show it exactly, and it never adds an obstacle nor anything in front of one, so the targets stay. An
image knob (`Knob.apply`: shadows, weather, camera) maps the drawn RGB image to a harder one and never
touches labels, instances or targets. A `Difficulty` says which level each knob takes: `scene` runs its
scene knobs, `apply` its image knobs on a `Rendered` frame, `render` both around the renderer; each in
`Knob.stage` order (the scene, then its light, the atmosphere, the camera). Level 0 skips a knob, so a
clean difficulty gives the renderer's scene and image bit for bit. Each knob draws from its own generator
seeded by the scene's `texture_seed` and the knob's name: the same scene and level give the same result,
and one knob's level never moves another's random draws.

- `occlusion`: parked cars, people and poles at the kerbs, a lead car ahead in the ego lane beyond the
  obstacle band, oncoming cars (`scene.occlude`).
- `clutter`: children, bollards and signposts on the verges, far cars, markings of the oncoming lane
  (`scene.clutter`).
- `shadows`: soft shadow bands cast across the street (by buildings beside it), and the hard-edged cast
  shadows of the scene's poles and cars under one sun (its footprint swept along the sun's direction
  for its height), darkening road and sidewalk pixels only; level = how many bands and how dark.
- `weather`: fog that thickens with each pixel's depth, rain streaks and dusk (gain down, sensor noise).
- `camera`: Gaussian blur, vignetting and a JPEG round trip (Pillow) at falling quality.
"""

from __future__ import annotations

import dataclasses
import io
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from gradsum.errors import GradSUMError
from gradsum.registry import Registry
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS, Rendered, instance_ids, render

#: levels of every knob: 0 (clean, the renderer's image) to MAX_LEVEL
MAX_LEVEL = 3
#: classes a cast shadow darkens (the street surface)
SHADOWED = ("road", "sidewalk")
FOG_COLOUR = np.array((196, 198, 202), dtype=np.float32)


@dataclass(frozen=True)
class Frame:
    """What a knob may read besides the image: labels, each pixel's depth in metres, the scene."""

    labels: np.ndarray  # (H, W) uint8 Cityscapes ids
    depth: np.ndarray  # (H, W) float64 metres from the camera; inf for sky and the skyline
    params: sc.SceneParams


#: (image uint8 (H, W, 3), frame, level 1..MAX_LEVEL, rng) → image uint8 (H, W, 3)
KnobFunction = Callable[[np.ndarray, Frame, int, np.random.Generator], np.ndarray]
#: (scene, level 1..MAX_LEVEL, rng) → the scene with what the knob adds at that level
SceneFunction = Callable[[sc.SceneParams, int, np.random.Generator], sc.SceneParams]


@dataclass(frozen=True)
class Knob:
    """One knob: when it runs (lower stage first) and what it does at a level: `place` changes the scene
    before it is drawn (occlusion, clutter), `apply` the drawn image (shadows, weather, camera)."""

    stage: int
    describe: str
    apply: KnobFunction | None = None
    place: SceneFunction | None = None


KNOBS: Registry[Knob] = Registry("difficulty knob")


def ground_depth(params: sc.SceneParams) -> np.ndarray:
    """(H, W) distance ahead of the flat road seen at each pixel centre (inf at and above the horizon)."""
    h, w = params.height, params.width
    horizon, focal = sc.HORIZON * h, sc.FOCAL * w
    offset = np.arange(h, dtype=np.float64) + 0.5 - horizon
    with np.errstate(divide="ignore"):
        z = np.where(offset > 0, focal * sc.CAMERA_HEIGHT / np.maximum(offset, 1e-12), np.inf)
    return np.broadcast_to(z[:, None], (h, w)).copy()


def depth_map(rendered: Rendered) -> np.ndarray:
    """(H, W) depth of each pixel: the road plane's distance on the ground, an object's or pole's own
    distance on its pixels (billboards stand upright), inf for sky, buildings and vegetation."""
    params = rendered.params
    depth = ground_depth(params)
    skyline = np.isin(rendered.labels, [IDS["sky"], IDS["building"], IDS["vegetation"]])
    depth[skyline] = np.inf
    for obj, instance in zip(params.objects, instance_ids(params), strict=True):
        depth[rendered.instances == instance] = obj.z
    # A pole or sign pixel takes the distance of the pole whose columns (its sign's, the wider, plus a
    # pixel of rounding) it lies in; nearer poles are written last and win.
    w, focal = params.width, sc.FOCAL * params.width
    cols = np.arange(w) + 0.5
    upright = np.isin(rendered.labels, [IDS["pole"], IDS["traffic sign"]])
    for pole in sorted(params.poles, key=lambda p: -p.z):
        u = w / 2 + focal * (float(sc.lane_centre(params, pole.z)) + pole.lateral) / pole.z
        half = focal * sc.SIGN_SIZE / 2 / pole.z + 1.0
        depth[upright & (np.abs(cols - u) <= half)[None, :]] = pole.z
    return depth


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(image + 0.5), 0.0, 255.0).astype(np.uint8)


# ----- shadows -----


def shadow_bands(frame: Frame, count: int, darkness: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) multiplier in [1 − darkness, 1]: `count` soft bands of shade across the street, each a
    building's shadow between two slanted edges on the ground, 1 off the road and sidewalks."""
    p = frame.params
    z = frame.depth
    x = (np.arange(p.width) + 0.5 - p.width / 2)[None, :] / (sc.FOCAL * p.width) * np.where(np.isinf(z), 0, z)
    shade = np.zeros(z.shape, dtype=np.float64)
    for _ in range(count):
        # uniform in 1/depth, i.e. in image rows, and as long as a share of its distance: bands of like
        # height on screen, wherever they fall between the bumper and 20 m
        near = 1.0 / rng.uniform(1.0 / 20.0, 1.0 / 2.5)
        length = near * rng.uniform(0.15, 0.4)
        slope = rng.uniform(-0.6, 0.6)  # the sun's azimuth slants the edges across the street
        along = z - slope * x
        inside = np.clip((along - near) / 0.5, 0, 1) * np.clip((near + length - along) / 0.5, 0, 1)
        shade = np.maximum(shade, np.where(np.isfinite(z), inside, 0.0))
    street = np.isin(frame.labels, [IDS[name] for name in SHADOWED])
    return 1.0 - darkness * shade * street


#: the sun's elevation (radians) draws from this range: a caster of height h throws a shadow h / tan(e)
#: long, 1 to 2.7 times its height, so a 5 m pole's shadow crosses the road
SUN_ELEVATION = (np.radians(20.0), np.radians(45.0))
#: a car's footprint length (m) along the road: the renderer draws cars as upright boards `width` wide,
#: the shadow needs the ground they cover
CAR_LENGTH = 4.2


@dataclass(frozen=True)
class Sun:
    """Where the light comes from: `azimuth` (radians, 0 = shadows point away from the camera, π/2 = to
    the right) and `elevation` above the horizon."""

    azimuth: float
    elevation: float

    def shadow(self, height: float) -> np.ndarray:
        """The ground offset (x, z) in metres from the foot of a caster `height` tall to its shadow's tip."""
        length = height / np.tan(self.elevation)
        return length * np.array([np.sin(self.azimuth), np.cos(self.azimuth)])


def draw_sun(rng: np.random.Generator) -> Sun:
    """A sun at any azimuth and an elevation in SUN_ELEVATION."""
    return Sun(float(rng.uniform(0.0, 2 * np.pi)), float(rng.uniform(*SUN_ELEVATION)))


def ground_coordinates(params: sc.SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) world x (lateral, m) and z (ahead, m) of the flat road under each pixel centre; x is 0 and z
    inf at and above the horizon."""
    z = ground_depth(params)
    u = (np.arange(params.width) + 0.5 - params.width / 2)[None, :] / (sc.FOCAL * params.width)
    return u * np.where(np.isinf(z), 0.0, z), z


def _hull(points: np.ndarray) -> np.ndarray:
    """The convex hull of (n, 2) points, counter-clockwise (Andrew's monotone chain)."""
    ordered = sorted(map(tuple, np.unique(points, axis=0)))

    def half(chain: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in chain:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(ordered) + half(ordered[::-1]), dtype=np.float64)


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def inside_polygon(x: np.ndarray, z: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Whether each ground point (x, z) lies inside the convex counter-clockwise `polygon` ((n, 2): x, z)
    or on its edge."""
    inside = np.ones(np.shape(x), dtype=bool)
    for (x0, z0), (x1, z1) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        inside &= (x1 - x0) * (z - z0) - (z1 - z0) * (x - x0) >= 0
    return inside


def cast_polygons(params: sc.SceneParams, sun: Sun) -> list[np.ndarray]:
    """The shadow on the ground of each visible pole and car: its footprint swept along the sun's shadow
    offset for its height (a convex polygon in world (x, z), counter-clockwise)."""
    casters = [
        (float(sc.lane_centre(params, p.z)) + p.lateral, p.z, sc.POLE_WIDTH, sc.POLE_WIDTH, p.height)
        for p in params.poles
        if "pole" not in params.removed
    ]
    casters += [
        (float(sc.lane_centre(params, o.z)) + o.lateral, o.z, o.width, CAR_LENGTH, o.height)
        for o in sc.visible_objects(params)
        if o.cls == "car"
    ]
    polygons = []
    for x, z, width, length, height in casters:
        foot = np.array(
            [[x - width / 2, z], [x + width / 2, z], [x + width / 2, z + length], [x - width / 2, z + length]]
        )
        polygons.append(_hull(np.concatenate([foot, foot + sun.shadow(height)])))
    return polygons


def cast_shadows(frame: Frame, sun: Sun) -> np.ndarray:
    """(H, W) bool: road and sidewalk pixels whose ground lies in a pole's or car's shadow."""
    x, z = ground_coordinates(frame.params)
    street = np.isin(frame.labels, [IDS[name] for name in SHADOWED]) & np.isfinite(z)
    shaded = np.zeros(z.shape, dtype=bool)
    for polygon in cast_polygons(frame.params, sun):
        shaded[street] |= inside_polygon(x[street], z[street], polygon)
    return shaded


def _shadows(image: np.ndarray, frame: Frame, level: int, rng: np.random.Generator) -> np.ndarray:
    darkness = 0.15 + 0.12 * level
    factor = shadow_bands(frame, count=level, darkness=darkness, rng=rng)
    # drawn after the bands, so the bands of a level are those it had before poles and cars cast shadows
    cast = cast_shadows(frame, draw_sun(rng))
    factor = np.minimum(factor, np.where(cast, 1.0 - darkness, 1.0))
    # factor ≤ 1 and rounding half up: a shaded pixel never comes out brighter than it went in
    return _to_uint8(image.astype(np.float64) * factor[..., None])


KNOBS.add(
    "shadows",
    Knob(
        0, "soft building shadows across road and sidewalks and the cast shadows of poles and cars", _shadows
    ),
)


# ----- weather -----


def fog(image: np.ndarray, depth: np.ndarray, visibility: float, ceiling: float) -> np.ndarray:
    """Blend towards FOG_COLOUR by `ceiling · (1 − exp(−depth / visibility))`: farther, foggier."""
    amount = ceiling * (1.0 - np.exp(-depth / visibility))[..., None]
    return image.astype(np.float64) * (1.0 - amount) + FOG_COLOUR * amount


def rain(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` short, faint, slanted light streaks drawn over the image."""
    out = image.astype(np.float64)
    h, w = out.shape[:2]
    for _ in range(count):
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        length = int(rng.integers(3, max(4, h // 8)))
        rows = r0 + np.arange(length)
        cols = c0 + np.arange(length) // 3  # wind: one column across per three rows down
        keep = (rows < h) & (cols < w)
        rows, cols = rows[keep], cols[keep]
        out[rows, cols] = out[rows, cols] * 0.6 + 220.0 * 0.4
    return out


def dusk(image: np.ndarray, gain: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Less light (`gain` < 1) and the sensor noise a camera adds when it amplifies it (σ `noise`)."""
    return image.astype(np.float64) * gain + rng.normal(0.0, noise, size=image.shape)


def _weather(image: np.ndarray, frame: Frame, level: int, rng: np.random.Generator) -> np.ndarray:
    foggy = fog(image, frame.depth, visibility=120.0 / level, ceiling=0.25 + 0.2 * level)
    wet = rain(foggy, count=level * frame.params.height * frame.params.width // 400, rng=rng)
    return _to_uint8(dusk(wet, gain=1.0 - 0.15 * level, noise=2.0 * level, rng=rng))


KNOBS.add("weather", Knob(1, "fog growing with depth, rain streaks, dusk gain and sensor noise", _weather))


# ----- camera -----


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each channel (σ in pixels; the image edge reflected)."""
    return ndimage.gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")


def vignette(image: np.ndarray, strength: float) -> np.ndarray:
    """Darken towards the corners: gain 1 − strength · r², r = 1 at the corners."""
    h, w = image.shape[:2]
    ry = (np.arange(h) + 0.5 - h / 2) / (h / 2)
    rx = (np.arange(w) + 0.5 - w / 2) / (w / 2)
    r2 = (ry[:, None] ** 2 + rx[None, :] ** 2) / 2.0
    return image.astype(np.float64) * (1.0 - strength * r2)[..., None]


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The uint8 image after a JPEG round trip through Pillow at `quality`."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


#: JPEG quality per camera level
JPEG_QUALITY = {1: 85, 2: 55, 3: 25}


def _camera(image: np.ndarray, frame: Frame, level: int, rng: np.random.Generator) -> np.ndarray:
    lens = vignette(blur(image, sigma=0.4 * level), strength=0.15 * level)
    return jpeg(_to_uint8(lens), JPEG_QUALITY[level])


KNOBS.add("camera", Knob(2, "lens blur, vignetting and JPEG compression", _camera))


# ----- occlusion and clutter: scene knobs -----

KNOBS.add(
    "occlusion",
    Knob(-2, "parked cars, people and poles at the kerbs, a lead car ahead, oncoming cars", place=sc.occlude),
)
KNOBS.add(
    "clutter",
    Knob(
        -1,
        "children, bollards and signposts on the verges, far cars, markings of the oncoming lane",
        place=sc.clutter,
    ),
)


# ----- difficulty -----


@dataclass(frozen=True)
class Difficulty:
    """A level (0..MAX_LEVEL) per knob; knobs left out are at 0. `Difficulty()` is the clean renderer."""

    levels: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name, level in self.levels:
            KNOBS.get(name, "difficulty (--difficulty)")
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= MAX_LEVEL:
                raise GradSUMError(
                    f"difficulty {name}={level!r}: the level must be an integer 0..{MAX_LEVEL} (--difficulty)"
                )
        object.__setattr__(self, "levels", tuple(sorted((n, lv) for n, lv in self.levels if lv)))

    @classmethod
    def of(cls, levels: Mapping[str, int] | Difficulty | None) -> Difficulty:
        """A Difficulty from a mapping knob → level (None: clean)."""
        if isinstance(levels, Difficulty):
            return levels
        return cls(tuple((levels or {}).items()))

    @property
    def clean(self) -> bool:
        """True when every knob is at level 0."""
        return not self.levels

    def to_dict(self) -> dict[str, int]:
        """Every knob's level (0 included), for a manifest."""
        return {name: dict(self.levels).get(name, 0) for name in KNOBS.names()}

    def _staged(self) -> list[tuple[str, int, Knob]]:
        return sorted(((n, lv, KNOBS.get(n)) for n, lv in self.levels), key=lambda item: item[2].stage)

    def scene(self, params: sc.SceneParams) -> sc.SceneParams:
        """The scene with every scene knob (`Knob.place`) at its level: what it adds joins the parameters,
        so the scene JSON, the labels, the instances and every re-render show it."""
        for name, level, knob in self._staged():
            if knob.place is not None:
                params = knob.place(params, level, knob_rng(params, name))
        return params

    def apply(self, rendered: Rendered) -> Rendered:
        """The frame with every image knob (`Knob.apply`) at its level applied to the image; labels,
        instances and targets are the very same arrays. A difficulty without image knobs returns
        `rendered` itself. Scene knobs act in `scene`, before drawing: a re-render from a stored scene's
        parameters already holds what they added, and goes through this alone."""
        image_knobs = [(n, lv, k.apply) for n, lv, k in self._staged() if k.apply is not None]
        if not image_knobs:
            return rendered
        frame = Frame(rendered.labels, depth_map(rendered), rendered.params)
        image = rendered.image
        for name, level, function in image_knobs:
            image = function(image, frame, level, knob_rng(rendered.params, name))
        return dataclasses.replace(rendered, image=image)

    def render(self, params: sc.SceneParams) -> Rendered:
        """A freshly sampled scene drawn at this difficulty: its scene knobs, the renderer, its image knobs."""
        return self.apply(render(self.scene(params)))


def knob_rng(params: sc.SceneParams, knob: str) -> np.random.Generator:
    """The knob's generator for this scene: seeded by the scene's texture seed and the knob's name."""
    return np.random.default_rng([params.texture_seed, zlib.crc32(knob.encode())])


def parse_difficulty(texts: Sequence[str]) -> Difficulty:
    """`["shadows=2", "camera=1"]` → a Difficulty; malformed text, an unknown knob or a level outside
    0..MAX_LEVEL raises a GradSUMError naming `--difficulty`."""
    levels: dict[str, int] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise GradSUMError(
                f"--difficulty {text!r}: expected KNOB=LEVEL, e.g. shadows=2; knobs: {', '.join(KNOBS.names())}"
            )
        levels[name.strip()] = int(value)
    return Difficulty.of(levels)
