"""`evaluate(results)`: run trust checks on an existing results folder and its models.

The folder's manifest holds the run's config, so the same truth set, split, models, methods and
targets are read back; checkpoints must exist (nothing is trained here). The folder is rebuilt in a
staging copy and swapped in only when every check and the report succeeded, so a failure leaves the
old folder as it was.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradsum.contract import MANIFEST, table_schema
from gradsum.errors import ResultsError
from gradsum.evaluation.base import CHECKS, unavailable
from gradsum.evaluation.trust import run_checks
from gradsum.fileio import atomic_directory
from gradsum.pipeline.config import RunConfig, config_from_dict
from gradsum.pipeline.inputs import check_names, ensure_model, open_configured
from gradsum.pipeline.trust import evaluation_context, seed_twins, shuffled_twins, write_trust_tables
from gradsum.report import write_report
from gradsum.report.results import read_manifest
from gradsum.truthsets import TruthSet
from gradsum.utils import resolve_device

log = logging.getLogger(__name__)


def results_config(folder: Path, manifest: dict[str, Any]) -> RunConfig:
    """The run config recorded in a results folder's manifest."""
    recorded = manifest.get("config")
    if not isinstance(recorded, dict):
        raise ResultsError(f"{folder / MANIFEST}: field 'config' is missing; not a `gradsum run` folder")
    return config_from_dict(recorded, f"{folder / MANIFEST}: config")


def supported_checks(names: Sequence[str], truthset: TruthSet) -> tuple[str, ...]:
    """The checks of `names` that can run on `truthset`; each left out is logged with its reason."""
    kept = []
    for name in names:
        if (reason := unavailable(name, truthset)) is None:
            kept.append(name)
        else:
            log.info("check %s left out: %s", name, reason)
    return tuple(kept)


def evaluate(
    results: str | Path,
    checks: Sequence[str] | None = None,
    *,
    images: int | None = None,
    options: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
) -> Path:
    """Run `checks` (default: every registered check the truth set supports) on a results folder.

    The folder's earlier trust tables are replaced by this evaluation's, so checks from two
    evaluations are never mixed in one trust table.
    """
    folder = Path(results)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such results folder")
    manifest = read_manifest(folder)
    config = results_config(folder, manifest)
    settings = config.evaluation
    settings = dataclasses.replace(
        settings,
        checks=tuple(checks) if checks is not None else tuple(CHECKS.names()),
        images=settings.images if images is None else images,
        options={**settings.options, **(options or {})},
    )
    config = dataclasses.replace(config, evaluation=settings)
    check_names(config)
    device = resolve_device(device or config.device)
    truthset = open_configured(config)
    if checks is None:
        settings = dataclasses.replace(settings, checks=supported_checks(settings.checks, truthset))
        config = dataclasses.replace(config, evaluation=settings)
    count = len(truthset) if config.truthset.limit is None else min(config.truthset.limit, len(truthset))
    models = [
        ensure_model(entry, config, Path(config.truthset.path), device, train=False)
        for entry in config.models
    ]
    twins = shuffled_twins(config, Path(config.truthset.path), device, train=False)
    seeds = seed_twins(config, Path(config.truthset.path), device, train=False)
    context = evaluation_context(config, truthset, models, device, count, twins, seeds)
    report = run_checks(context, settings.checks)
    earlier = {str(name) for name in manifest.get("trust_tables", [])}
    with atomic_directory(folder, overwrite=True) as staging:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        for name in earlier:
            (staging / table_schema(name).file).unlink(missing_ok=True)
        write_trust_tables(staging, report)
        recorded = {key: value for key, value in manifest.items() if key != "files"}
        recorded["config"] = dataclasses.asdict(config)
        recorded["trust_tables"] = sorted(report.tables())
        recorded["evaluation_seconds"] = report.seconds
        write_report(staging, manifest=recorded)
    log.info("trust tables: %s", ", ".join(sorted(report.tables())))
    return folder
