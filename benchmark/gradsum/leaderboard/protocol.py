"""A leaderboard protocol: everything that decides a ranking, frozen in one packaged file with a content hash.

A protocol names the synthetic set (the generator's settings), the split and image counts, the models with
their training budgets and training seeds, the checks with their options, the nulls, α and the
materiality margins. `protocol_hash` is the sha256 of its validated content, so YAML formatting and key
order do not change it and any value does; a results folder records the hash in its manifest under
`PROTOCOL_KEY`, and `check_protocol` refuses to put folders of different protocols side by side.
`run_configs` expands a protocol into the `gradsum run` configs that execute it, one per training seed.

The difficulty ladder is part of a protocol: its models train on a mix of levels (`generator.mix`: each
train and val scene draws its own level of each knob; the evaluated split stays clean) and its `ladder`
section says which knobs and levels the test scenes are rendered at, on how many images, with which checks
and training seeds (`gradsum.leaderboard.ladder` expands and tabulates it).

What a protocol leaves to the run: where the data, models and results live (locations, not content), and
the methods (the leaderboard scores every registered method that applies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradsum.aggregation import RESOLUTIONS
from gradsum.attribution.normalise import NORMALISERS
from gradsum.attribution.targets import TARGETS
from gradsum.contract import MANIFEST, PROTOCOL_KEY
from gradsum.dataspec import build, load_yaml, shipped
from gradsum.errors import GradSUMError, ResultsError, SpecError
from gradsum.evaluation.base import check_options
from gradsum.evaluation.materiality import materiality_margins
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.verdicts import ALPHA
from gradsum.fileio import read_json_object
from gradsum.names import check_model_name
from gradsum.pipeline.config import ModelConfig, RunConfig, config_from_dict
from gradsum.pipeline.inputs import configured_spec
from gradsum.pipeline.trust import SEED_OFFSET
from gradsum.registry import Registry
from gradsum.taxonomy import TASKS
from gradsum.truthsets.layout import SPLITS
from gradsum.truthsets.synthetic.ladder import KNOBS, MAX_LEVEL
from gradsum.truthsets.synthetic.writer import (
    DEFAULT_FRACTIONS,
    FORMAT_VERSION,
    MIXED_SPLITS,
    check_mix,
    check_size,
    split_counts,
)

#: The check the ladder cannot do without: the task metric per level is read from the model outputs it
#: records (`leaderboard.ladder.task_metrics`).
LADDER_METRIC_CHECK = "causal"
#: Where the shipped protocols live (`<name>.yaml`).
PROTOCOLS = Path(__file__).parent / "protocols"


@dataclass(frozen=True)
class GeneratorSettings:
    """How the synthetic set is rendered: what `gradsum generate` takes."""

    count: int
    seed: int
    #: image size (H, W)
    size: tuple[int, int]
    #: train, val, test shares of `count`
    split_fractions: tuple[float, float, float]
    #: planted sky-tint shortcut strength in train (0: none)
    shortcut: float
    #: the generator's file format (`writer.FORMAT_VERSION`); the renderer has no version of its own, so
    #: the pixels are pinned by this, the settings above and the package version that rendered them
    format_version: int
    #: difficulty knobs whose level (0..3) each train and val scene draws for itself (`gradsum generate
    #: --mix`): the models train on every level; the evaluated split stays clean
    mix: tuple[str, ...] = ()


@dataclass(frozen=True)
class LadderSettings:
    """The difficulty ladder: the protocol's models (trained on the mix) evaluated on the evaluated split's
    scenes rendered at each level of each knob, one knob at a time, and on the clean scenes alike."""

    #: difficulty knobs (`truthsets.synthetic.ladder.KNOBS`), each one of the generator's mix
    knobs: tuple[str, ...]
    #: levels of each knob (1..3); the clean scenes are level 0 of every knob
    levels: tuple[int, ...]
    #: the first this many images of the split are attributed and evaluated at every level
    evaluated_images: int
    #: the protocol's checks that judge at every level
    checks: tuple[str, ...]
    #: the protocol's training seeds whose models are evaluated at every level
    training_seeds: tuple[int, ...]


@dataclass(frozen=True)
class LayerSweep:
    """Where each CAM method's layer is picked (`leaderboard.layers`): on images of another split than the
    evaluated one, so the layer is never chosen on the images that then judge it."""

    #: the split the granularity sweep runs on (never the evaluated split)
    split: str
    #: the first this many images of that split
    images: int


@dataclass(frozen=True)
class ProtocolModel:
    """One model of the protocol: a shipped spec, its task and its training-budget overrides."""

    name: str
    spec: str
    task: str
    #: deep-merged into the spec before training, as a run config's `models[].overrides`; the training
    #: seed is the protocol's (`training_seeds`), never set here
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Protocol:
    """A frozen leaderboard protocol (see the module docstring); built from YAML with `dataspec.build`."""

    name: str
    version: int
    generator: GeneratorSettings
    #: the split attributed and evaluated
    split: str
    #: images of the split attributed and profiled (None: all)
    attributed_images: int | None
    #: the first this many images of the split are evaluated by every check
    evaluated_images: int
    #: every model is trained once per seed; the ranking's CI includes the variation across them
    training_seeds: tuple[int, ...]
    models: tuple[ProtocolModel, ...]
    #: check name → its options (`gradsum evaluate --help`)
    checks: dict[str, dict[str, Any]]
    #: the null explainers run beside every method (`evaluation.nulls.NULL_EXPLAINERS`)
    nulls: tuple[str, ...]
    #: run the known-answer controls beside every method
    controls: bool
    #: one-sided level of every paired comparison (`evaluation.verdicts.ALPHA`)
    alpha: float
    #: task → materiality margin δ (`evaluation.materiality.MATERIALITY`)
    materiality: dict[str, float]
    #: attribution target per task
    targets: dict[str, str]
    normalise: str
    resolution: str
    #: resamples of the profiles' CIs and of the verdicts' paired bootstrap
    bootstrap_resamples: int
    verdict_resamples: int
    seed: int
    #: the difficulty ladder (None: the protocol has none)
    ladder: LadderSettings | None = None
    #: each swept CAM method (`checks.granularity.methods`) is also scored at the layer this sweep picks
    #: (None: at its default layer only)
    layer_sweep: LayerSweep | None = None


def builtin_protocols() -> Registry[Path]:
    """The shipped protocols by name (`gradsum/leaderboard/protocols/*.yaml`)."""
    return shipped(PROTOCOLS, "protocol")


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A protocol file, or a built-in protocol by name; errors name the file and field (or `--protocol`)."""
    source = Path(name_or_path)
    if not source.is_file():
        source = builtin_protocols().get(str(name_or_path), "--protocol")
    return protocol_from_dict(load_yaml(source), str(source))


def protocol_from_dict(data: Mapping[str, Any], source: str = "<protocol>") -> Protocol:
    """A validated `Protocol` from a plain mapping; errors name `source` and the field."""
    protocol = build(Protocol, dict(data), source)
    _check_header(protocol, source)
    _check_generator(protocol.generator, f"{source}: generator")
    _check_models(protocol, source)
    if "materiality" in protocol.checks.get("causal", {}):
        raise SpecError(
            f"{source}: checks.causal.materiality: set the margins once, in the top-level `materiality`"
        )
    for name, options in protocol.checks.items():
        try:
            check_options(name, options)
        except GradSUMError as error:
            raise SpecError(f"{source}: checks.{name}: {error}") from None
    try:
        materiality_margins(protocol.materiality)
    except GradSUMError as error:
        raise SpecError(f"{source}: materiality: {error}") from None
    if set(protocol.materiality) != set(TASKS):
        raise SpecError(f"{source}: materiality: need a margin for every task: {', '.join(TASKS)}")
    _check_attribution(protocol, source)
    _check_ladder(protocol, source)
    _check_layer_sweep(protocol, source)
    try:
        canonical_json(protocol)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{source}: holds a value with no exact JSON form to hash ({error})") from None
    return protocol


def _check_header(protocol: Protocol, source: str) -> None:
    """Name, version, split, image counts, seeds and α in range."""
    if not protocol.name:
        raise SpecError(f"{source}: name: must be non-empty")
    if protocol.version < 1:
        raise SpecError(f"{source}: version: must be 1 or more, got {protocol.version}")
    if protocol.split not in SPLITS:
        raise SpecError(f"{source}: split: {protocol.split!r}; valid: {', '.join(SPLITS)}")
    if protocol.evaluated_images < 1:
        raise SpecError(f"{source}: evaluated_images: must be 1 or more, got {protocol.evaluated_images}")
    attributed = protocol.attributed_images
    if attributed is not None and attributed < protocol.evaluated_images:
        raise SpecError(
            f"{source}: attributed_images: {attributed} is fewer than evaluated_images "
            f"({protocol.evaluated_images}); the evaluated images are among the attributed ones"
        )
    seeds = protocol.training_seeds
    if not seeds or len(set(seeds)) != len(seeds):
        raise SpecError(f"{source}: training_seeds: need one or more distinct seeds, got {list(seeds)}")
    # each model's seed twin (the sanity check's ceiling) trains with seed + SEED_OFFSET: a twin that
    # were another training seed's model would not be a twin
    clashes = sorted({s + SEED_OFFSET for s in seeds} & set(seeds))
    if clashes:
        raise SpecError(
            f"{source}: training_seeds: seed(s) {clashes} are another seed's twin (seed + {SEED_OFFSET}); "
            "space the seeds apart"
        )
    if not 0.0 < protocol.alpha < 0.5:
        raise SpecError(f"{source}: alpha: must lie in (0, 0.5), got {protocol.alpha}")
    for name in ("bootstrap_resamples", "verdict_resamples"):
        if getattr(protocol, name) < 1:
            raise SpecError(f"{source}: {name}: must be 1 or more, got {getattr(protocol, name)}")


def _check_attribution(protocol: Protocol, source: str) -> None:
    """A target for every task, and normalisation and resolution names the pipeline knows."""
    if set(protocol.targets) != set(TASKS):
        raise SpecError(f"{source}: targets: need a target for every task: {', '.join(TASKS)}")
    try:
        for task, name in protocol.targets.items():
            TARGETS[task].get(name, f"targets.{task}")
        NORMALISERS.get(protocol.normalise, "normalise")
    except GradSUMError as error:
        raise SpecError(f"{source}: {error}") from None
    if protocol.resolution not in RESOLUTIONS:
        raise SpecError(f"{source}: resolution: {protocol.resolution!r}; valid: {', '.join(RESOLUTIONS)}")


def _check_generator(settings: GeneratorSettings, where: str) -> None:
    """Settings the generator accepts, in the format it writes, with the split shares a run can render."""
    if settings.format_version != FORMAT_VERSION:
        raise SpecError(
            f"{where}.format_version: the generator writes format {FORMAT_VERSION}, the protocol needs "
            f"{settings.format_version}"
        )
    # a run config renders with the generator's default shares (GenerateConfig has no field for them)
    if not all(math.isclose(a, b) for a, b in zip(settings.split_fractions, DEFAULT_FRACTIONS, strict=True)):
        raise SpecError(
            f"{where}.split_fractions: {list(settings.split_fractions)}; a run renders "
            f"{list(DEFAULT_FRACTIONS)} only"
        )
    if not 0.0 <= settings.shortcut <= 1.0:
        raise SpecError(f"{where}.shortcut: must lie in [0, 1], got {settings.shortcut}")
    try:
        check_size(settings.size)
        split_counts(settings.count, settings.split_fractions)
    except GradSUMError as error:
        raise SpecError(f"{where}: {error}") from None
    try:
        check_mix(settings.mix)
    except GradSUMError as error:
        raise SpecError(f"{where}.mix: {error}") from None
    if list(settings.mix) != sorted(settings.mix):
        raise SpecError(f"{where}.mix: list the knobs sorted ({', '.join(sorted(settings.mix))})")


def _check_ladder(protocol: Protocol, source: str) -> None:
    """Knobs the models trained on, levels 1..MAX_LEVEL, images the split holds, and checks and seeds of the
    protocol; and an evaluated split the mix leaves clean."""
    mix = protocol.generator.mix
    if mix and protocol.split in MIXED_SPLITS:
        raise SpecError(
            f"{source}: split: {protocol.split!r} draws the mix's levels; evaluate a clean split "
            f"(not {', '.join(MIXED_SPLITS)})"
        )
    ladder = protocol.ladder
    if ladder is None:
        return
    where = f"{source}: ladder"
    _check_distinct(ladder.knobs, f"{where}.knobs")
    for knob in ladder.knobs:
        try:
            KNOBS.get(knob, "ladder.knobs")
        except GradSUMError as error:
            raise SpecError(f"{source}: {error}") from None
        if knob not in mix:
            raise SpecError(
                f"{where}.knobs: {knob!r} is not in generator.mix ({', '.join(mix) or 'empty'}); the models "
                "would meet its levels only in the ladder"
            )
    _check_distinct(ladder.levels, f"{where}.levels")
    if not all(1 <= level <= MAX_LEVEL for level in ladder.levels):
        raise SpecError(f"{where}.levels: {list(ladder.levels)}; each must lie in 1..{MAX_LEVEL}")
    _check_images(protocol, protocol.split, ladder.evaluated_images, f"{where}.evaluated_images")
    for name, chosen, offered in (
        ("checks", ladder.checks, tuple(protocol.checks)),
        ("training_seeds", ladder.training_seeds, protocol.training_seeds),
    ):
        _check_distinct(chosen, f"{where}.{name}")
        unknown = [value for value in chosen if value not in offered]
        if unknown:
            raise SpecError(
                f"{where}.{name}: {unknown} not among the protocol's {name} ({', '.join(map(str, offered))})"
            )
    if LADDER_METRIC_CHECK not in ladder.checks:
        raise SpecError(
            f"{where}.checks: need {LADDER_METRIC_CHECK!r}: the task metric per level is read from the model "
            "outputs it records"
        )


def _check_layer_sweep(protocol: Protocol, source: str) -> None:
    """A split other than the evaluated one, images it holds, and a granularity check naming the methods."""
    sweep = protocol.layer_sweep
    if sweep is None:
        return
    where = f"{source}: layer_sweep"
    if sweep.split not in SPLITS or sweep.split == protocol.split:
        others = [split for split in SPLITS if split != protocol.split]
        raise SpecError(
            f"{where}.split: {sweep.split!r}; pick the layer on another split than the evaluated "
            f"{protocol.split!r}: {', '.join(others)}"
        )
    _check_images(protocol, sweep.split, sweep.images, f"{where}.images")
    if "granularity" not in protocol.checks:
        raise SpecError(f"{where}: needs checks.granularity (its methods are the ones swept)")


def _check_images(protocol: Protocol, split: str, images: int, where: str) -> None:
    """1..the number of scenes the protocol's set holds in `split`."""
    available = split_counts(protocol.generator.count, protocol.generator.split_fractions)[split]
    if not 1 <= images <= available:
        raise SpecError(f"{where}: {images}; must lie in 1..{available} (the {split} split's scenes)")


def _check_distinct(values: Sequence[object], where: str) -> None:
    """One or more values, none twice."""
    if not values or len(set(values)) != len(values):
        raise SpecError(f"{where}: need one or more distinct values, got {list(values)}")


def _check_models(protocol: Protocol, source: str) -> None:
    """Unique names, shipped specs of the declared task, and no training seed in the overrides."""
    names = [m.name for m in protocol.models]
    if not names or len(set(names)) != len(names):
        raise SpecError(f"{source}: models: need one or more models with distinct names, got {names}")
    for i, model in enumerate(protocol.models):
        where = f"{source}: models[{i}]"
        check_model_name(model.name, f"{where}.name")
        if "seed" in model.overrides.get("train", {}):
            raise SpecError(f"{where}.overrides.train.seed: the protocol's training_seeds set it; remove it")
        try:
            spec = configured_spec(ModelConfig(model.name, spec=model.spec, overrides=model.overrides))
        except GradSUMError as error:
            raise SpecError(f"{where}: {error}") from None
        if spec is None or spec.task != model.task:
            got = None if spec is None else spec.task
            raise SpecError(f"{where}.task: {model.task!r}, but its spec (with overrides) trains {got!r}")


def canonical_json(protocol: Protocol) -> str:
    """The protocol's content as JSON with sorted keys and no whitespace: what its hash is taken of."""
    return json.dumps(dataclasses.asdict(protocol), sort_keys=True, separators=(",", ":"), allow_nan=False)


def protocol_hash(protocol: Protocol) -> str:
    """Hex sha256 of `canonical_json(protocol)`."""
    return hashlib.sha256(canonical_json(protocol).encode("utf-8")).hexdigest()


def check_protocol(folders: Sequence[str | Path]) -> str:
    """The one protocol hash every results folder's manifest records under `PROTOCOL_KEY`.

    A folder whose manifest records none, or another hash than the others, raises `ResultsError` naming
    its manifest file and both hashes.
    """
    if not folders:
        raise ResultsError("check_protocol: no results folders given")
    hashes = {}
    for folder in folders:
        path = Path(folder) / MANIFEST
        value = read_json_object(path, ResultsError, "results manifest").get(PROTOCOL_KEY)
        hashes[path] = value if isinstance(value, str) and value else None
    recorded: list[tuple[Path, str]] = [(path, value) for path, value in hashes.items() if value is not None]
    reference = f"{recorded[0][1]} ({recorded[0][0]})" if recorded else "none (no folder records one)"
    for path, value in hashes.items():
        if value is None or value != recorded[0][1]:
            raise ResultsError(
                f"{path}: protocol hash {value or 'none'} under {PROTOCOL_KEY!r}, but {reference}; results of "
                "different protocols are never mixed"
            )
    return recorded[0][1]


def run_configs(
    protocol: Protocol,
    methods: Sequence[Mapping[str, Any]] = (),
    truthset_path: str = "datasets/synthetic",
    models_dir: str | None = None,
    results_dir: str = "results",
) -> list[RunConfig]:
    """The `gradsum run` configs that execute `protocol`, one per training seed.

    They differ only in the training seed, the model names (`<model>_s<seed>`) and the results name
    (`<protocol>-seed<seed>`). `methods` are `methods:` entries of a run config; models live under
    `models_dir` (default `models/<protocol>`). A protocol whose α or nulls this code cannot reproduce is
    refused: the pipeline reads those from its constants.
    """
    source = f"protocol {protocol.name}"
    if not math.isclose(protocol.alpha, ALPHA):
        raise SpecError(
            f"{source}: alpha {protocol.alpha} is not the code's ALPHA {ALPHA}; this code cannot run it "
            "(a changed α is a new protocol version)"
        )
    nulls = tuple(null.method for null in NULL_EXPLAINERS)
    if protocol.nulls != nulls:
        raise SpecError(
            f"{source}: nulls {list(protocol.nulls)} are not the code's null explainers {list(nulls)}; "
            "this code cannot run it"
        )
    return [
        config_from_dict(_run_dict(protocol, seed, methods, truthset_path, models_dir, results_dir), source)
        for seed in protocol.training_seeds
    ]


def _run_dict(
    protocol: Protocol,
    seed: int,
    methods: Sequence[Mapping[str, Any]],
    truthset_path: str,
    models_dir: str | None,
    results_dir: str,
) -> dict[str, Any]:
    """One training seed's run config as a plain mapping."""
    generator = protocol.generator
    models = [
        {
            "name": f"{m.name}_s{seed}",
            "spec": m.spec,
            "overrides": {**m.overrides, "train": {**m.overrides.get("train", {}), "seed": seed}},
        }
        for m in protocol.models
    ]
    options = {name: dict(values) for name, values in protocol.checks.items()}
    if "causal" in options:
        options["causal"]["materiality"] = dict(protocol.materiality)
    return {
        "name": f"{protocol.name}-seed{seed}",
        "protocol": protocol_hash(protocol),
        "truthset": {
            "path": truthset_path,
            "split": protocol.split,
            "limit": protocol.attributed_images,
            "generate": {
                "count": generator.count,
                "seed": generator.seed,
                "size": list(generator.size),
                "shortcut": generator.shortcut,
                "mix": list(generator.mix),
            },
        },
        "models": models,
        "methods": [dict(m) for m in methods],
        "targets": dict(protocol.targets),
        "normalise": protocol.normalise,
        "resolution": protocol.resolution,
        "seed": protocol.seed,
        "bootstrap_resamples": protocol.bootstrap_resamples,
        "evaluation": {
            # sorted: the hash ignores key order, so nothing that reaches a run may depend on it
            "checks": sorted(protocol.checks),
            "images": protocol.evaluated_images,
            "nulls": True,
            "controls": protocol.controls,
            "options": options,
            "bootstrap_resamples": protocol.verdict_resamples,
            "seed_twins": [m["name"] for m in models],
        },
        "models_dir": models_dir if models_dir is not None else f"models/{protocol.name}",
        "results_dir": results_dir,
    }
