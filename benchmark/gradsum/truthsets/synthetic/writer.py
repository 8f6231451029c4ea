"""Write synthetic splits in the Cityscapes on-disk layout, atomically and deterministically."""

from __future__ import annotations

import json
import logging
import multiprocessing
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import gradsum
from gradsum.errors import GradSUMError, TruthSetError
from gradsum.fileio import atomic_directory, atomic_write_json
from gradsum.truthsets.labels import cityscapes_palette, subset
from gradsum.truthsets.layout import MANIFEST, SPLITS, FrameId
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.ladder import KNOBS, MAX_LEVEL, Difficulty
from gradsum.truthsets.synthetic.render import Rendered, instance_records, obstacle_instances

log = logging.getLogger(__name__)

KIND = "synthetic"
#: 2: instanceIds PNGs, obstacle instances in the scene JSON, yawRate positive = turning left
FORMAT_VERSION = 2
CITY = "synth"
DEFAULT_SIZE = (96, 192)
#: 8,000 training scenes: the obstacle ViT overfits 4,000 (test accuracy 0.92 → 0.93 in the same steps)
DEFAULT_COUNT = 10_000
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
#: zlib level 1 without row filters: lossless and deterministic, and several times faster than Pillow's
#: adaptive filtering on these noisy frames (which would cap generation well below 100 scenes/s).
PNG_LEVEL = 1
_PNG_COLOUR_TYPES = {1: 0, 3: 2}  # channels → PNG colour type (grey, RGB)
_PNG_BIT_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
_CHUNK = 250
#: Opt-in test splits for measuring a shortcut's pull (`decorrelated=True`): the test split's scenes,
#: re-rendered with the sky tint set to disagree (test_decorrelated) or agree (test_agreeing) with the
#: steering sign in every scene. Same scenes, so the two differ from test and from each other only in sky
#: pixels, and a model's error gap between them is the tint's effect alone, scene by scene.
DECORRELATED_SPLIT = "test_decorrelated"
AGREEING_SPLIT = "test_agreeing"
TINT_SPLITS: dict[str, bool] = {DECORRELATED_SPLIT: False, AGREEING_SPLIT: True}
TINT_SOURCE = "test"
#: The splits whose scenes draw their own levels of the mix's knobs (`generate(mix=...)`); the others stay
#: clean, so a model trained on the mix is tested on the clean scenes and, per level, on the ladder's sets.
MIXED_SPLITS = ("train", "val")


@dataclass(frozen=True)
class SplitPlan:
    """How many scenes one split gets, from which seed, and with what shortcut strength."""

    split: str
    count: int
    seed: int
    shortcut: float
    #: set for a tint split: every scene's sky tint agrees (True) or disagrees (False) with the steering sign
    tint_agrees: bool | None = None
    #: the difficulty ladder's level per rendering knob (clean by default)
    difficulty: Difficulty = field(default_factory=Difficulty)
    #: knobs whose level each scene draws for itself (`scene_difficulty`), on top of `difficulty`
    mix: tuple[str, ...] = ()


def split_seed(seed: int, split: str) -> int:
    """The split's own seed, derived from the set's seed (train, val and test never share scenes)."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0])


def split_counts(count: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, int]:
    """Scenes per split: val and test get their fraction (at least one each), train the rest."""
    if count < len(SPLITS):
        raise GradSUMError(f"count={count}: need at least {len(SPLITS)} scenes (--count), one per split")
    if len(fractions) != len(SPLITS) or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise GradSUMError(
            f"splits={tuple(fractions)}: need three positive fractions (train, val, test) summing to 1"
        )
    val = max(1, round(count * fractions[1]))
    test = max(1, round(count * fractions[2]))
    # Rounding may leave train empty; it then takes one scene from val.
    train = max(1, count - val - test)
    val = count - train - test
    return {"train": train, "val": val, "test": test}


def parse_size(text: str) -> tuple[int, int]:
    """`"96x192"` → (96, 192); raises a GradSUMError naming `--size` otherwise."""
    parts = text.lower().split("x")
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise GradSUMError(f"--size {text!r}: expected HxW, e.g. 96x192") from None
    return check_size((height, width))


def check_size(size: Sequence[int]) -> tuple[int, int]:
    """Validate an image size (H, W): at least 32×32, at most 2048 per side."""
    height, width = (int(v) for v in size)
    if not (32 <= height <= 2048 and 32 <= width <= 2048):
        raise GradSUMError(f"size={height}x{width}: height and width must lie in 32..2048 (--size)")
    return height, width


def frame_id(split: str, index: int) -> FrameId:
    """The Cityscapes-style identity of scene `index` of `split` (names carry nothing label-derived)."""
    return FrameId(split=split, city=CITY, seq=index // 1_000_000, frame=index % 1_000_000)


def scene_params(plan: SplitPlan, index: int, size: tuple[int, int]) -> sc.SceneParams:
    """The parameters of scene `index`: its generator is seeded by (split seed, index) alone; a tint split
    then sets the sky tint as its plan says."""
    params = sc.sample_scene(np.random.default_rng([plan.seed, index]), size, plan.shortcut)
    return params if plan.tint_agrees is None else sc.with_tint(params, plan.tint_agrees)


def check_mix(knobs: Sequence[str]) -> tuple[str, ...]:
    """The mix's knobs, sorted: each a registered knob (`ladder.KNOBS`), none twice; errors name `--mix`."""
    for name in knobs:
        KNOBS.get(name, "--mix")
    if len(set(knobs)) != len(knobs):
        raise GradSUMError(f"--mix {', '.join(knobs)}: a knob is named twice")
    return tuple(sorted(knobs))


def check_only(splits: Sequence[str]) -> tuple[str, ...]:
    """The splits to render in SPLITS order (empty: all of them); an unknown one raises naming `--only`."""
    for split in splits:
        if split not in SPLITS:
            raise GradSUMError(f"--only {split!r}: not a split; valid: {', '.join(SPLITS)}")
    return tuple(s for s in SPLITS if s in splits) if splits else SPLITS


def mix_level(params: sc.SceneParams, knob: str) -> int:
    """The level 0..MAX_LEVEL (uniform) scene `params` draws for `knob` of a mix: seeded by the scene's texture
    seed and the knob's name alone, so a scene keeps its level of one knob whatever else the mix holds."""
    rng = np.random.default_rng([params.texture_seed, zlib.crc32(f"mix:{knob}".encode())])
    return int(rng.integers(0, MAX_LEVEL + 1))


def scene_difficulty(plan: SplitPlan, params: sc.SceneParams) -> Difficulty:
    """The levels scene `params` of `plan` is rendered at: the plan's difficulty, and its own draw per mix knob
    (which wins over a level the difficulty gives the same knob)."""
    if not plan.mix:
        return plan.difficulty
    return Difficulty.of({**dict(plan.difficulty.levels), **{k: mix_level(params, k) for k in plan.mix}})


def render_scene(plan: SplitPlan, index: int, size: tuple[int, int]) -> tuple[Rendered, Difficulty]:
    """Scene `index` of `plan` rendered at its difficulty, with that difficulty."""
    params = scene_params(plan, index, size)
    difficulty = scene_difficulty(plan, params)
    return difficulty.render(params), difficulty


def tint_plans(source: SplitPlan) -> list[SplitPlan]:
    """The TINT_SPLITS plans: the source split's seed and count, so they render the source's scenes."""
    return [
        SplitPlan(split, source.count, source.seed, source.shortcut, agrees, source.difficulty, source.mix)
        for split, agrees in TINT_SPLITS.items()
    ]


def encode_png(array: np.ndarray) -> bytes:
    """Lossless, deterministic PNG bytes of a uint8 or uint16 (H, W) or (H, W, 3) array (bit depth 8 or 16)."""
    depth = _PNG_BIT_DEPTHS.get(array.dtype)
    if depth is None:
        raise GradSUMError(f"encode_png: array dtype {array.dtype} unsupported; valid: uint8, uint16")
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    # PNG stores 16-bit samples big-endian; the byte view then lays each row out as the file wants it.
    samples = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).reshape(height, -1)
    data = samples.view(np.uint8)
    rows = np.zeros((height, data.shape[1] + 1), dtype=np.uint8)  # leading 0: filter type "none"
    rows[:, 1:] = data
    header = struct.pack(">IIBBBBB", width, height, depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_LEVEL)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def scene_record(
    frame: FrameId, rendered: Rendered, levels: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The scene JSON: latent parameters, both targets, the shortcut cue's agreement, and the instances
    (id → class, z, lateral, obstacle) with the ids of those that make `obstacle` = 1; a scene of a mixed
    split also records the `difficulty` (knob → level) it drew."""
    return {
        **({} if levels is None else {"difficulty": dict(levels)}),
        "frame": frame.stem,
        "split": frame.split,
        "targets": rendered.targets,
        "shortcut_agrees": sc.shortcut_agrees(rendered.params),
        "road_curvature": rendered.params.curvature,
        "obstacle_instances": obstacle_instances(rendered.params),
        "instances": instance_records(rendered.params),
        "parameters": rendered.params.to_dict(),
    }


def write_scene(
    root: Path, frame: FrameId, rendered: Rendered, levels: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """Write one frame's six files under `root`; returns its scene record (`levels`: see `scene_record`)."""
    record = scene_record(frame, rendered, levels)
    files = {
        frame.image(root): encode_png(rendered.image),
        frame.label_ids(root): encode_png(rendered.labels),
        frame.color(root): encode_png(_PALETTE[rendered.labels]),
        frame.instance_ids(root): encode_png(rendered.instances.astype(np.uint16)),
        frame.vehicle(root): _json_bytes(sc.vehicle(rendered.params)),
        frame.scene(root): _json_bytes(record),
    }
    for path, data in files.items():
        path.write_bytes(data)
    return record


_PALETTE = cityscapes_palette()


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8")


def _write_range(task: tuple[Path, SplitPlan, int, int, tuple[int, int]]) -> list[dict[str, Any]]:
    root, plan, start, stop, size = task
    records = []
    for index in range(start, stop):
        rendered, difficulty = render_scene(plan, index, size)
        levels = difficulty.to_dict() if plan.mix else None
        records.append(write_scene(root, frame_id(plan.split, index), rendered, levels))
    return records


def make_folders(root: Path, plan: SplitPlan) -> None:
    """Create the split's four Cityscapes-layout folders under `root`."""
    probe = frame_id(plan.split, 0)
    for kind in ("leftImg8bit", "gtFine", "vehicle", "scene"):
        probe.path(root, kind, "x").parent.mkdir(parents=True, exist_ok=True)


def _tasks(root: Path, plans: Sequence[SplitPlan], size: tuple[int, int]) -> Iterator[tuple[Any, ...]]:
    for plan in plans:
        for start in range(0, plan.count, _CHUNK):
            yield (root, plan, start, min(start + _CHUNK, plan.count), size)


def mix_counts(records: Sequence[dict[str, Any]], mix: Sequence[str]) -> dict[str, list[int]]:
    """Scenes per level (0..MAX_LEVEL) of each mix knob in one split's records."""
    drawn = [[r["difficulty"][k] for k in mix] for r in records]
    levels = np.array(drawn, dtype=np.int64).reshape(len(records), len(mix))
    return {k: np.bincount(levels[:, i], minlength=MAX_LEVEL + 1).tolist() for i, k in enumerate(mix)}


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Target statistics of one split (recorded in the manifest)."""
    steer = np.array([r["targets"]["steering"] for r in records], dtype=np.float64)
    obstacle = np.array([r["targets"]["obstacle"] for r in records], dtype=np.float64)
    agrees = np.array([r["shortcut_agrees"] for r in records], dtype=np.float64)
    return {
        "steering": {
            "mean": float(steer.mean()),
            "std": float(steer.std()),
            "min": float(steer.min()),
            "max": float(steer.max()),
        },
        "obstacle_rate": float(obstacle.mean()),
        "shortcut_agreement": float(agrees.mean()),
    }


def generate(
    out: str | Path,
    count: int = DEFAULT_COUNT,
    seed: int = 0,
    size: Sequence[int] = DEFAULT_SIZE,
    shortcut: float = 0.0,
    splits: Sequence[float] = DEFAULT_FRACTIONS,
    overwrite: bool = False,
    workers: int = 1,
    decorrelated: bool = False,
    difficulty: Mapping[str, int] | Difficulty | None = None,
    mix: Sequence[str] = (),
    only: Sequence[str] = (),
) -> Path:
    """Render `count` scenes into train/val/test at `out`; the set appears only once it is complete.

    `decorrelated` adds the TINT_SPLITS (test_decorrelated, test_agreeing): the test scenes again with
    the sky tint disagreeing / agreeing with the steering sign in every scene. `difficulty` (knob →
    level 0..3, `ladder.KNOBS`) renders every split harder; images change, labels and targets do not.
    `mix` (knob names) trains on many levels: each scene of the MIXED_SPLITS (train, val) draws its own
    level 0..3 of each mix knob (`mix_level`, recorded in its scene JSON and counted in the manifest),
    while test and the tint splits stay as `difficulty` says; a knob both mixed and given a level draws its
    level in the mixed splits and takes the given one in the others (a ladder level's set: its training
    scenes are the mixed set's own, its test scenes at the level). `only` (split names; empty: all) renders
    those splits alone, each with the scenes it has in the whole set: a ladder level's test split costs
    its own scenes only.
    """
    size = check_size(size)
    if not 0.0 <= shortcut <= 1.0:
        raise GradSUMError(f"shortcut={shortcut}: must lie in [0, 1] (--shortcut)")
    if workers < 1:
        raise GradSUMError(f"workers={workers}: must be at least 1 (--workers)")
    ladder = Difficulty.of(difficulty)
    mixed = check_mix(mix)
    rendered = check_only(only)
    counts = split_counts(count, splits)
    target = Path(out)
    if target.exists() and not overwrite:
        raise TruthSetError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")
    plans = [
        SplitPlan(
            split,
            counts[split],
            split_seed(seed, split),
            shortcut if split == "train" else 0.0,
            None,
            ladder,
            mixed if split in MIXED_SPLITS else (),
        )
        for split in SPLITS
        if split in rendered
    ]
    if decorrelated and TINT_SOURCE in rendered:
        plans += tint_plans(next(p for p in plans if p.split == TINT_SOURCE))
    with atomic_directory(target, overwrite=overwrite) as staging:
        for plan in plans:
            make_folders(staging, plan)
        records = _render_all(staging, plans, size, workers)
        manifest = {
            "kind": KIND,
            "format_version": FORMAT_VERSION,
            "generator": {"name": "gradsum.truthsets.synthetic", "version": gradsum.__version__},
            "parameters": {
                "count": count,
                "seed": seed,
                "size": list(size),
                "shortcut": shortcut,
                "decorrelated": decorrelated,
                # recorded for a harder set only: a clean set's manifest stays as before, so results
                # profiled on it still pair with those of sets rendered earlier (the gate compares them)
                **({} if ladder.clean else {"difficulty": ladder.to_dict()}),
                # likewise recorded only when set, with the scenes per level in each mixed split's entry
                **({"mix": list(mixed)} if mixed else {}),
                **({"only": list(rendered)} if rendered != SPLITS else {}),
                "split_fractions": list(splits),
                "city": CITY,
            },
            "splits": {
                p.split: {
                    "count": p.count,
                    "seed": p.seed,
                    "shortcut": p.shortcut,
                    **_tint_fields(p),
                    **({"mix_levels": mix_counts(records[p.split], p.mix)} if p.mix else {}),
                    **summarise(records[p.split]),
                }
                for p in plans
            },
            "classes": subset(sc.CLASSES).to_dict(),
            "constants": {
                "camera_height": sc.CAMERA_HEIGHT,
                "lane_width": sc.LANE_WIDTH,
                "look_ahead": sc.LOOK_AHEAD,
                "obstacle_distance": sc.OBSTACLE_DISTANCE,
                "steering_scale": sc.STEERING_SCALE,
            },
        }
        # Written last: its presence marks a complete truth set.
        atomic_write_json(staging / MANIFEST, manifest)
    log.info("synthetic truth set ready at %s (%s)", target, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return target


def _tint_fields(plan: SplitPlan) -> dict[str, Any]:
    """A tint split's manifest fields: where its scenes come from and how its tint is set."""
    return {} if plan.tint_agrees is None else {"source": TINT_SOURCE, "tint_agrees": plan.tint_agrees}


def _render_all(
    root: Path, plans: Sequence[SplitPlan], size: tuple[int, int], workers: int
) -> dict[str, list[dict[str, Any]]]:
    records: dict[str, list[dict[str, Any]]] = {p.split: [] for p in plans}
    tasks = list(_tasks(root, plans, size))
    if workers == 1:
        return _collect(map(_write_range, tasks), tasks, records)
    with multiprocessing.get_context().Pool(workers) as pool:
        return _collect(pool.imap(_write_range, tasks), tasks, records)


def _collect(
    results: Iterator[list[dict[str, Any]]],
    tasks: Sequence[tuple[Any, ...]],
    records: dict[str, list[dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    total, done = sum(task[3] - task[2] for task in tasks), 0
    for task, chunk in zip(tasks, results, strict=True):
        records[task[1].split].extend(chunk)
        done += len(chunk)
        log.info("rendered %d/%d scenes", done, total)
    return records
