"""The gate's runs: a candidate model profiled the way a baseline results folder was, and seed twins of the
baseline's model profiled the same way to calibrate a policy.

A baseline's manifest records the whole run config, so a candidate model is run on the baseline's truth
set, split, image limit, methods, targets and trust checks with nothing to configure: the candidate takes
the place of one baseline model, under that model's name, so the gate pairs their profiles by name. The
gate itself (`gradsum.gate`) only compares folders; this module is what makes the candidate's folder.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from gradsum.contract import CARD, MANIFEST
from gradsum.errors import SpecError
from gradsum.gate import propose_policy, write_policy
from gradsum.models.checkpoints import read_card
from gradsum.pipeline.config import ModelConfig, RunConfig, config_from_dict
from gradsum.pipeline.inputs import configured_spec, ensure_model, ensure_truthset, model_folder
from gradsum.pipeline.run import run
from gradsum.pipeline.trust import SEED_OFFSET, seed_twin_entry
from gradsum.report.results import read_manifest
from gradsum.utils import resolve_device

log = logging.getLogger(__name__)

#: The folders `calibrate` writes under its `out`: the twins' results, and the proposed policy.
TWIN_RESULTS = "twins"
POLICY_FILE = "policy.yaml"


def baseline_config(baseline: str | Path) -> RunConfig:
    """The run config a baseline results folder was made with (its manifest's `config`)."""
    folder = Path(baseline)
    manifest = read_manifest(folder)
    data = manifest.get("config")
    source = f"{folder / MANIFEST} (field 'config')"
    if not isinstance(data, dict):
        raise SpecError(f"{source}: missing; the folder was not written by `gradsum run`")
    return config_from_dict(data, source)


def baseline_model(config: RunConfig, model: str | None, source: str) -> ModelConfig:
    """The baseline's model entry called `model` (None: its only model)."""
    entries = {entry.name: entry for entry in config.models}
    if model is None:
        if len(entries) != 1:
            raise SpecError(
                f"--model: {source} holds {len(entries)} models; name the one the candidate replaces: "
                f"{', '.join(entries)}"
            )
        return next(iter(entries.values()))
    if model not in entries:
        raise SpecError(f"--model: {source} holds no model {model!r}; valid: {', '.join(entries)}")
    return entries[model]


def candidate_config(config: RunConfig, entry: ModelConfig, checkpoint: Path) -> RunConfig:
    """`config` narrowed to one model, `entry`'s name loaded from `checkpoint`, with its methods and checks.

    The entry keeps its spec (when it has one) so the trust checks find the baseline model's seed twin
    (`<name>_seed1`, already trained for the baseline) and the sanity check's ceiling is the same on both
    sides; studies that follow a run (the label study) are not repeated for a candidate.
    """
    candidate = ModelConfig(
        name=entry.name,
        spec=entry.spec,
        checkpoint=str(checkpoint),
        overrides=entry.overrides,
        train_on=entry.train_on,
    )
    methods = tuple(
        dataclasses.replace(method, models=(entry.name,))
        for method in config.methods
        if method.models is None or entry.name in method.models
    )
    kept = tuple(name for name in config.evaluation.seed_twins if name == entry.name and entry.spec)
    shuffled = tuple(name for name in config.evaluation.shuffled_labels if name == entry.name and entry.spec)
    evaluation = dataclasses.replace(config.evaluation, seed_twins=kept, shuffled_labels=shuffled)
    return dataclasses.replace(
        config,
        name=f"{config.name}-candidate",
        models=(candidate,),
        methods=methods,
        evaluation=evaluation,
        labels=None,
    )


def check_candidate(folder: Path, entry: ModelConfig, config: RunConfig) -> None:
    """Refuse a candidate that is not a model folder, or is trained for another task than `entry`'s model."""
    if not (folder / CARD).is_file():
        raise SpecError(f"{folder}: not a model folder ({CARD} is missing)")
    card = read_card(folder)
    spec = configured_spec(entry)
    expected = spec.task if spec is not None else read_card(model_folder(entry, config)).task
    if card.task != expected:
        raise SpecError(
            f"{folder / CARD}: the candidate is trained for the {card.task} task; the baseline's "
            f"{entry.name!r} for the {expected} task"
        )


def profile_candidate(
    baseline: str | Path,
    candidate_model: str | Path,
    *,
    model: str | None = None,
    out: str | Path,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Profile `candidate_model` as the baseline profiled its model `model` (None: its only one) and return
    the candidate's results folder `out`."""
    config = baseline_config(baseline)
    entry = baseline_model(config, model, str(Path(baseline) / MANIFEST))
    folder = Path(candidate_model)
    check_candidate(folder, entry, config)
    chosen = config if device is None else dataclasses.replace(config, device=device)
    log.info("profiling %s as %s of %s", folder, entry.name, baseline)
    return run(candidate_config(chosen, entry, folder), out=out, progress=progress)


def calibrate(
    baseline: str | Path,
    *,
    model: str | None = None,
    method: str | None = None,
    twins: int = 2,
    twin_models: Sequence[str | Path] = (),
    out: str | Path,
    device: str | None = None,
    progress: bool = False,
) -> Path:
    """Propose a policy from the spread of seed twins of the baseline's model and write it to
    `out/policy.yaml`; return its path.

    The twins are `twin_models` when given, else `twins` models retrained from the baseline's spec with the
    training seed + 1, + 2, ... (trained when missing, reused when on disk). Each twin is profiled as the
    baseline was (`profile_candidate`), and the policy's tolerances are the largest differences the twins
    show (`gradsum.gate.propose_policy`): a model that differs from the baseline no more than a retrained
    copy of it passes.
    """
    config = baseline_config(baseline)
    entry = baseline_model(config, model, str(Path(baseline) / MANIFEST))
    root = Path(out)
    folders = [Path(f) for f in twin_models] or _trained_twins(config, entry, twins, device, progress)
    results = [
        profile_candidate(
            baseline,
            folder,
            model=entry.name,
            out=root / TWIN_RESULTS / folder.name,
            device=device,
            progress=progress,
        )
        for folder in folders
    ]
    policy = propose_policy(Path(baseline), results, model=entry.name, method=method)
    return write_policy(policy, root / POLICY_FILE)


def _trained_twins(
    config: RunConfig, entry: ModelConfig, count: int, device: str | None, progress: bool
) -> list[Path]:
    if count < 1:
        raise SpecError(f"--twins: at least 1 seed twin is needed to calibrate, got {count}")
    chosen = resolve_device(device or config.device)
    truthset_root = ensure_truthset(config)
    folders = []
    for offset in range(SEED_OFFSET, SEED_OFFSET + count):
        # offset 1 is the trust checks' seed twin: a baseline evaluated with seed twins has it already
        twin = seed_twin_entry(entry, offset, "--calibrate")
        ensure_model(twin, config, truthset_root, chosen, progress)
        folders.append(model_folder(twin, config))
    return folders
