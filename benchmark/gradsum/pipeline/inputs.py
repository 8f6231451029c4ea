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
from gradsum.attribution.targets import TARGETS
from gradsum.dataspec import changed_fields
from gradsum.errors import SpecError, TruthSetError
from gradsum.evaluation import CHECKS
from gradsum.fileio import read_json_object
from gradsum.models import ModelSpec, checkpoint_folder, load_model, load_spec, model_family, train_model
from gradsum.models.checkpoints import CARD
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline.config import GenerateConfig, MethodConfig, ModelConfig, RunConfig
from gradsum.truthsets import TruthSet, open_truthset, require_labels
from gradsum.truthsets.layout import MANIFEST
from gradsum.truthsets.synthetic.writer import FORMAT_VERSION as SYNTHETIC_FORMAT
from gradsum.truthsets.synthetic.writer import KIND as SYNTHETIC_KIND

log = logging.getLogger(__name__)


def warn_if_rendered_otherwise(root: Path, settings: GenerateConfig) -> None:
    """Log a warning when the synthetic set at `root` was rendered with settings other than `settings`.

    The set is still used: re-rendering would replace files a user may rely on, and the warning says how.
    """
    try:
        rendered = read_json_object(root / MANIFEST, TruthSetError).get("parameters")
    except TruthSetError:
        return  # not a synthetic set, or a broken one the reader reports
    if not isinstance(rendered, dict):
        return
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
    if changed := changed_fields(recorded, wanted):
        differences = ", ".join(f"{key} {recorded[key]} (config: {wanted[key]})" for key in changed)
        log.warning(
            "%s was rendered with %s; it is used as it is (remove it to render truthset.generate's set)",
            root,
            differences,
        )


def rendered_format(root: Path) -> int | None:
    """The format version of a synthetic set at `root` (None: not a synthetic set or unreadable)."""
    try:
        manifest = read_json_object(root / MANIFEST, TruthSetError)
    except TruthSetError:
        return None
    version = manifest.get("format_version")
    return version if manifest.get("kind") == SYNTHETIC_KIND and isinstance(version, int) else None


def ensure_truthset(config: RunConfig) -> Path:
    """The truth set's folder, rendering the synthetic set first when it is missing and configured.

    A synthetic set in an older file format is rendered again from the config's settings (the same seed
    gives the same scenes), with a warning: the current reader refuses it, and nothing of it is lost.
    """
    root = Path(config.truthset.path)
    settings = config.truthset.generate
    if root.exists():
        version = rendered_format(root)
        if settings is None or version in (None, SYNTHETIC_FORMAT):
            if settings is not None:
                warn_if_rendered_otherwise(root, settings)
            return root
        log.warning(
            "%s is a synthetic set in format %s; rendering it again in format %s from truthset.generate",
            root,
            version,
            SYNTHETIC_FORMAT,
        )
    elif settings is None:
        raise SpecError(
            f"truthset.path: {root} does not exist and the config has no truthset.generate block; "
            "set truthset.path in the config or give the folder as `gradsum run --truthset PATH`"
        )
    from gradsum.truthsets.synthetic import generate

    log.info("rendering the synthetic truth set into %s (%d scenes)", root, settings.count)
    return Path(
        generate(
            root,
            count=settings.count,
            seed=settings.seed,
            size=settings.size,
            shortcut=settings.shortcut,
            decorrelated=settings.decorrelated,
            workers=os.cpu_count() or 1,  # the bytes do not depend on the worker count
            overwrite=root.exists(),
        )
    )


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
    """Load a model's checkpoint, training it from its spec first when it is missing (and `train`).

    `shuffle_labels` trains on permuted labels (the data-randomisation twin of a model); `resume`
    continues an interrupted training from its last finished epoch (False: start afresh).
    """
    folder = checkpoint_folder(entry.checkpoint or Path(config.models_dir) / entry.name)
    spec = configured_spec(entry)
    if not (folder / CARD).exists():
        if not train:
            raise SpecError(f"models[{entry.name}]: no checkpoint at {folder} (card.json); train it first")
        if spec is None:
            raise SpecError(f"models[{entry.name}]: no checkpoint at {folder} and no spec to train one from")
        log.info("training %s (%s, %s) into %s", entry.name, spec.architecture, spec.task, folder)
        train_model(
            spec,
            truthset_root,
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
    size = card.spec["img_size"]
    return LoadedModel(entry.name, module, card.to_dict(), card.task, (int(size[0]), int(size[1])))


def configured_spec(entry: ModelConfig) -> ModelSpec | None:
    """The spec a model entry names, with its overrides applied; None for a checkpoint without a spec."""
    if entry.spec is None:
        return None
    spec = load_spec(entry.spec, f"models[{entry.name}].spec")
    if not entry.overrides:
        return spec
    return ModelSpec.from_dict(_merge(spec.to_dict(), entry.overrides), f"models[{entry.name}].overrides")


def methods_for(model: LoadedModel, methods: tuple[MethodConfig, ...]) -> list[MethodConfig]:
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
    for i, check in enumerate(config.evaluation.checks):
        CHECKS.get(check, f"evaluation.checks[{i}]")
    for check in config.evaluation.options:
        # options under a misspelt check name would be ignored without a word
        CHECKS.get(check, "evaluation.options")
    if config.resolution not in RESOLUTIONS:
        raise SpecError(f"resolution: {config.resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    for name in ("models", "methods"):
        if not getattr(config, name):
            raise SpecError(f"{name}: the config names none; a run needs at least one model and one method")
