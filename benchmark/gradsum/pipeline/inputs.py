"""The pipeline's inputs: the truth set (rendered when missing), the models (trained when missing), and
which methods run on which model; names are checked before any work starts."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from gradsum.aggregation import RESOLUTIONS
from gradsum.attribution import METHODS
from gradsum.attribution.normalise import NORMALISERS
from gradsum.attribution.postprocess import check_steps
from gradsum.attribution.precision import PRECISIONS
from gradsum.attribution.targets import TARGETS
from gradsum.dataspec import changed_fields
from gradsum.errors import SpecError, TruthSetError
from gradsum.evaluation import CHECKS
from gradsum.evaluation.base import check_options
from gradsum.evaluation.planned import PlannedMethod
from gradsum.fileio import read_json_object, sha256_file
from gradsum.finetune.loop import finetune_model
from gradsum.models import ModelSpec, checkpoint_folder, load_model, load_spec, model_family, train_model
from gradsum.models.checkpoints import CARD, weights_file
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import CompressConfig, FinetuneConfig, GenerateConfig, ModelConfig, RunConfig
from gradsum.truthsets import TruthSet, open_truthset, require_labels
from gradsum.truthsets.layout import MANIFEST, SPLITS
from gradsum.truthsets.synthetic.writer import FORMAT_VERSION as SYNTHETIC_FORMAT
from gradsum.truthsets.synthetic.writer import KIND as SYNTHETIC_KIND
from gradsum.truthsets.synthetic.writer import check_only

log = logging.getLogger(__name__)


def _levels(levels: dict[str, Any]) -> dict[str, int]:
    return {str(name).strip(): int(level) for name, level in sorted(levels.items()) if int(level)}


def rendered_otherwise(root: Path, settings: GenerateConfig) -> str | None:
    """How the synthetic set at `root` was rendered otherwise than `settings` says ("count 200 (config:
    10000), ..."), or None: the same settings, or no synthetic set there to compare."""
    try:
        rendered = read_json_object(root / MANIFEST, TruthSetError).get("parameters")
    except TruthSetError:
        return None  # not a synthetic set, or a broken one the reader reports
    if not isinstance(rendered, dict):
        return None
    wanted = {
        "count": settings.count,
        "seed": settings.seed,
        "size": settings.size,
        "shortcut": settings.shortcut,
        "decorrelated": settings.decorrelated,
    }
    # a setting the manifest does not record predates it: the set was rendered with its default
    defaults = dataclasses.asdict(GenerateConfig())
    recorded = {key: rendered.get(key, defaults[key]) for key in wanted}
    # a mix and a choice of splits are recorded only when set
    wanted["mix"], recorded["mix"] = sorted(settings.mix), sorted(rendered.get("mix") or [])
    # a set holding more splits than wanted holds the wanted ones just the same
    splits, held = check_only(settings.only), rendered.get("only")
    wanted["only"] = list(splits)
    recorded["only"] = [split for split in splits if split in (held if isinstance(held, list) else SPLITS)]
    # the difficulty as knob → level with the zeros left out: a clean set records none
    wanted["difficulty"] = _levels(dict(item.partition("=")[::2] for item in settings.difficulty))
    recorded["difficulty"] = _levels(rendered.get("difficulty") or {})
    # a nested setting (difficulty.camera) is named by its field, with the whole value on each side
    changed = list(dict.fromkeys(name.partition(".")[0] for name in changed_fields(recorded, wanted)))
    return ", ".join(f"{key} {recorded[key]} (config: {wanted[key]})" for key in changed) or None


def warn_if_rendered_otherwise(root: Path, settings: GenerateConfig, field: str = "truthset") -> None:
    """Log a warning when the synthetic set at `root` was rendered with settings other than `settings`
    (the `generate` block of config field `field`).

    The set is still used: re-rendering would replace files a user may rely on, and the warning says how.
    """
    if differences := rendered_otherwise(root, settings):
        log.warning(
            "%s was rendered with %s; it is used as it is (remove it to render %s.generate's set)",
            root,
            differences,
            field,
        )


def rendered_format(root: Path) -> int | None:
    """The format version of a synthetic set at `root` (None: not a synthetic set or unreadable)."""
    try:
        manifest = read_json_object(root / MANIFEST, TruthSetError)
    except TruthSetError:
        return None
    version = manifest.get("format_version")
    return version if manifest.get("kind") == SYNTHETIC_KIND and isinstance(version, int) else None


def ensure_rendered(root: Path, settings: GenerateConfig | None, field: str, elsewhere: str = "") -> Path:
    """The truth set at `root`, rendering the synthetic set from `settings` first when it is missing.

    `field` is the config field the path and settings come from (`truthset`, `models[x].train_on`);
    errors and warnings name it, and a missing folder's error ends with `elsewhere` (another way to
    name the folder). A synthetic set in an older file format is rendered again from the
    settings (the same seed gives the same scenes), with a warning: the current reader refuses it, and
    nothing of it is lost.
    """
    if root.exists():
        version = rendered_format(root)
        if settings is None or version in (None, SYNTHETIC_FORMAT):
            if settings is not None:
                warn_if_rendered_otherwise(root, settings, field)
            return root
        log.warning(
            "%s is a synthetic set in format %s; rendering it again in format %s from %s.generate",
            root,
            version,
            SYNTHETIC_FORMAT,
            field,
        )
    elif settings is None:
        raise SpecError(
            f"{field}.path: {root} does not exist and the config has no {field}.generate block to "
            f"render it from; set {field}.path to an existing truth set or add {field}.generate{elsewhere}"
        )
    from gradsum.truthsets.synthetic import generate, parse_difficulty

    log.info("rendering the synthetic truth set into %s (%d scenes)", root, settings.count)
    return Path(
        generate(
            root,
            count=settings.count,
            seed=settings.seed,
            size=settings.size,
            shortcut=settings.shortcut,
            decorrelated=settings.decorrelated,
            difficulty=parse_difficulty(settings.difficulty),
            mix=settings.mix,
            only=settings.only,
            workers=os.cpu_count() or 1,  # the bytes do not depend on the worker count
            overwrite=root.exists(),
        )
    )


def ensure_truthset(config: RunConfig) -> Path:
    """The run's truth set folder, rendered first when it is missing and configured (`ensure_rendered`)."""
    settings = config.truthset
    # only the run's own set can also be named on the command line
    command_line = ", or give the folder as `gradsum run --truthset PATH`"
    return ensure_rendered(Path(settings.path), settings.generate, "truthset", command_line)


def open_configured(config: RunConfig, root: Path | None = None) -> TruthSet:
    """The configured split of the truth set at `root` (default: the configured path), refused up front
    when it is empty or unlabelled (Cityscapes' public test split), naming it."""
    settings = config.truthset
    truthset = open_truthset(root or settings.path, settings.split, settings.kind, settings.spec)
    require_labels(truthset)
    return truthset


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def model_folder(entry: ModelConfig, config: RunConfig) -> Path:
    """A model entry's checkpoint folder: its `checkpoint`, else `<models_dir>/<name>`."""
    return checkpoint_folder(entry.checkpoint or Path(config.models_dir) / entry.name)


def base_entry(settings: FinetuneConfig | CompressConfig, config: RunConfig) -> ModelConfig:
    """The model entry a fine-tune or compression starts from (`config_from_dict` checked that it exists)."""
    return next(m for m in config.models if m.name == settings.base)


def training_root(entry: ModelConfig, config: RunConfig, truthset_root: Path) -> Path:
    """The truth set `entry` trains on: its `train_on` set (rendered when missing), else the run's at
    `truthset_root`; a fine-tune's or compression's is the set its base (and its base's base) trained on."""
    while (derived := entry.finetune or entry.compress) is not None:
        entry = base_entry(derived, config)
    if entry.train_on is None:
        return truthset_root
    field = f"models[{entry.name}].train_on"
    return ensure_rendered(Path(entry.train_on.path), entry.train_on.generate, field)


def ensure_model(
    entry: ModelConfig,
    config: RunConfig,
    truthset_root: Path,
    device: str,
    progress: bool = False,
    train: bool = True,
    shuffle_labels: bool = False,
    resume: bool = True,
) -> LoadedModel:
    """Load a model's checkpoint, making it first when it is missing (and `train`): trained from its spec
    on its training set, or fine-tuned from its base (which the run has ensured before, being listed
    earlier).

    `shuffle_labels` trains on permuted labels (the data-randomisation twin of a model); `resume`
    continues an interrupted training from its last finished epoch (False: start afresh).
    """
    folder = model_folder(entry, config)
    spec = configured_spec(entry)
    if not (folder / CARD).exists():
        if not train:
            raise SpecError(f"models[{entry.name}]: no checkpoint at {folder} ({CARD}); train it first")
        if entry.finetune is not None:
            finetune_entry(entry, entry.finetune, config, truthset_root, device)
        elif entry.compress is not None:
            compress_entry(entry, entry.compress, config, truthset_root, device)
        elif spec is None:
            raise SpecError(f"models[{entry.name}]: no checkpoint at {folder} and no spec to train one from")
        else:
            log.info("training %s (%s, %s) into %s", entry.name, spec.architecture, spec.task, folder)
            train_model(
                spec,
                training_root(entry, config, truthset_root),
                spec.task,
                folder,
                device=device,
                progress=progress,
                shuffle_labels=shuffle_labels,
                resume=resume,
            )
    module, card = load_model(folder, device=device)
    changed = [] if spec is None else changed_fields(card.spec, spec.to_dict())
    if changed := [name for name in changed if name != "description"]:
        # kept, not retrained: the checkpoint may be the one a user's results rest on
        log.warning(
            "%s was trained from a spec that differs from models[%s] in %s; it is used as it is "
            "(remove the folder to train the configured spec)",
            folder,
            entry.name,
            ", ".join(changed),
        )
    if entry.finetune is not None:
        warn_if_finetuned_otherwise(entry, entry.finetune, card.finetune, config)
    if entry.compress is not None:
        warn_if_compressed_otherwise(entry, entry.compress, card.compression, config)
    size = card.spec["img_size"]
    return LoadedModel(entry.name, module, card.to_dict(), card.task, (int(size[0]), int(size[1])))


def finetune_entry(
    entry: ModelConfig, settings: FinetuneConfig, config: RunConfig, truthset_root: Path, device: str
) -> None:
    """Fine-tune `entry`'s base (already ensured) into `entry`'s folder on the base's training set."""
    base = base_entry(settings, config)
    base_folder, folder = model_folder(base, config), model_folder(entry, config)
    log.info("fine-tuning %s from %s (%s) into %s", entry.name, base.name, base_folder, folder)
    root = training_root(base, config, truthset_root)
    finetune_model(base_folder, root, folder, settings.settings, device=device)


def compress_entry(
    entry: ModelConfig, settings: CompressConfig, config: RunConfig, truthset_root: Path, device: str
) -> None:
    """Compress `entry`'s base (already ensured) into `entry`'s folder, its metrics re-measured on the
    base's training set."""
    # imported here: the compressions load torch's quantisation and pruning, which most runs never need
    from gradsum.models.compression import compress_model

    base = base_entry(settings, config)
    base_folder, folder = model_folder(base, config), model_folder(entry, config)
    log.info(
        "compressing %s (%s %s) from %s into %s",
        entry.name,
        settings.method,
        settings.level,
        base_folder,
        folder,
    )
    root = training_root(base, config, truthset_root)
    compress_model(base_folder, settings.method, settings.level, folder, truthset=root, device=device)


def warn_if_compressed_otherwise(
    entry: ModelConfig, settings: CompressConfig, recorded: dict[str, Any], config: RunConfig
) -> None:
    """Log a warning naming the fields in which the card's `compression` record differs from `settings`
    (a changed base counts: its weights are no longer those compressed)."""
    base = model_folder(base_entry(settings, config), config)
    wanted = {
        "method": settings.method,
        "level": settings.level,
        "parent_sha256": sha256_file(weights_file(base)),
    }
    if changed := changed_fields({key: recorded.get(key) for key in wanted}, wanted):
        # kept, not redone: the checkpoint may be the one a user's results rest on
        log.warning(
            "%s was compressed with settings that differ from models[%s].compress in %s; it is used as it "
            "is (remove the folder to compress %s again)",
            model_folder(entry, config),
            entry.name,
            ", ".join(changed),
            settings.base,
        )


def finetune_record(settings: FinetuneConfig, config: RunConfig) -> dict[str, Any]:
    """The part of a fine-tuned card's `finetune` record that `settings` fixes, the base's checksum being
    that of its current weights."""
    return {
        "base_weights_sha256": sha256_file(weights_file(model_folder(base_entry(settings, config), config))),
        **settings.settings.to_dict(),
    }


def warn_if_finetuned_otherwise(
    entry: ModelConfig, settings: FinetuneConfig, recorded: dict[str, Any], config: RunConfig
) -> None:
    """Log a warning naming the fields in which the card's fine-tuning `recorded` differs from `settings`
    (a changed base counts: its weights are no longer those fine-tuned)."""
    wanted = finetune_record(settings, config)
    if changed := changed_fields({key: recorded.get(key) for key in wanted}, wanted):
        # kept, not redone: the checkpoint may be the one a user's results rest on
        log.warning(
            "%s was fine-tuned with settings that differ from models[%s].finetune in %s; it is used as "
            "it is (remove the folder to fine-tune %s again)",
            model_folder(entry, config),
            entry.name,
            ", ".join(changed),
            settings.base,
        )


def configured_spec(entry: ModelConfig) -> ModelSpec | None:
    """The spec a model entry names, with its overrides applied; None for a checkpoint without a spec."""
    if entry.spec is None:
        return None
    spec = load_spec(entry.spec, f"models[{entry.name}].spec")
    if not entry.overrides:
        return spec
    return ModelSpec.from_dict(_merge(spec.to_dict(), entry.overrides), f"models[{entry.name}].overrides")


def methods_for(model: LoadedModel, methods: tuple[PlannedMethod, ...]) -> list[PlannedMethod]:
    """The configured methods that run on `model` (named explicitly, or applicable to its family)."""
    family = model_family(model.module)
    chosen = []
    for method in methods:
        if method.models is not None:
            if model.name in method.models:
                chosen.append(method)
        elif family in METHODS.get(method.method, "methods[].method").applies_to:
            chosen.append(method)
    return chosen


def check_names(config: RunConfig) -> None:
    """Refuse unknown method, target, check, normalisation and resolution names, and a config without
    models or methods, before any work starts."""
    for i, method in enumerate(config.methods):
        METHODS.get(method.method, f"methods[{i}].method")
        if method.normalise is not None:
            NORMALISERS.get(method.normalise, f"methods[{i}].normalise")
        if method.postprocess is not None:
            check_steps(method.postprocess, f"methods[{i}].postprocess")
    for task, name in config.targets.items():
        if task not in TARGETS:
            raise SpecError(f"targets: unknown task {task!r}; valid: {', '.join(TARGETS)}")
        TARGETS[task].get(name, f"targets.{task}")
    NORMALISERS.get(config.normalise, "normalise")
    PRECISIONS.get(config.precision, "precision")
    for i, check in enumerate(config.evaluation.checks):
        CHECKS.get(check, f"evaluation.checks[{i}]")
    for check, options in config.evaluation.options.items():
        # options under a misspelt check name would be ignored without a word, and a wrong value would
        # surface only after training
        CHECKS.get(check, "evaluation.options")
        check_options(check, options)
    if config.resolution not in RESOLUTIONS:
        raise SpecError(f"resolution: {config.resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    for name in ("models", "methods"):
        if not getattr(config, name):
            raise SpecError(f"{name}: the config names none; a run needs at least one model and one method")
