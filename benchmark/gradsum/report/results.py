"""Read a results folder and check it against its manifest and the results contract (`gradsum.contract`).

The manifest's `files` maps every other output's relative path to its sha256. Tables and model cards
must match exactly; plots and `report.html` are renderings that `write_report` rewrites (and
re-registers in the manifest), so a stale entry for one of them only logs a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gradsum.contract import (
    CARDS,
    CORE_TABLES,
    MANIFEST,
    PLOTS,
    RECOMMENDATIONS,
    REPORT,
    TRUST,
    read_table,
    table_schema,
)
from gradsum.errors import ResultsError
from gradsum.fileio import read_json_object, sha256_file

log = logging.getLogger(__name__)

#: Fields every model card carries (`cards/<model>.json`).
CARD_FIELDS = ("name", "task", "architecture", "metrics")
#: The trust layer's tables read as `Results` fields of their own, not into `Results.checks`.
_OWN_FIELDS = (TRUST.name, RECOMMENDATIONS.name)


@dataclass(frozen=True)
class Results:
    """A validated results folder: its manifest, tables (None when absent) and model cards."""

    path: Path
    manifest: dict[str, Any]
    per_image: pd.DataFrame
    profiles: pd.DataFrame
    comparisons: pd.DataFrame | None = None
    attention: pd.DataFrame | None = None
    attention_profiles: pd.DataFrame | None = None
    ground_truth: pd.DataFrame | None = None
    trust: pd.DataFrame | None = None
    #: one line per model: the method to use, or that none is shown better than chance (`verdicts.recommend`)
    recommendations: pd.DataFrame | None = None
    #: per model × method × image: mass and area on void ids, outlier distance and flag (newer folders)
    input_data: pd.DataFrame | None = None
    #: the label-quality study's tables (`labels` config; `gradsum.contract.LABEL_TABLES`)
    label_levels: pd.DataFrame | None = None
    label_agreement: pd.DataFrame | None = None
    label_thresholds: pd.DataFrame | None = None
    label_classes: pd.DataFrame | None = None
    label_verdicts: pd.DataFrame | None = None
    label_categories: pd.DataFrame | None = None
    #: the compression study's tables (`compression` config; `gradsum.contract.COMPRESSION_TABLES`)
    compression_levels: pd.DataFrame | None = None
    compression_agreement: pd.DataFrame | None = None
    compression_onset: pd.DataFrame | None = None
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: every other table of the trust layer, by file stem (those the manifest lists in `trust_tables`)
    checks: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run's name: its config's name, else its folder's."""
        config = self.manifest.get("config")
        return str(config.get("name")) if isinstance(config, dict) and config.get("name") else self.path.name


def is_rendering(relative: str) -> bool:
    """True for outputs that `write_report` regenerates (plots and the HTML report)."""
    return relative == REPORT or relative.startswith(f"{PLOTS}/")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The parsed `manifest.json` of a results folder, with a `files` mapping."""
    path = folder / MANIFEST
    if not path.is_file():
        raise ResultsError(f"{path}: missing; not a finished results folder")
    manifest = read_json_object(path, ResultsError, "JSON")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ResultsError(f"{path}: field 'files' must map relative paths to sha256 strings")
    return manifest


def verify_checksums(folder: Path, files: dict[str, str]) -> None:
    """Check every file the manifest lists exists with the listed sha256."""
    for relative, expected in sorted(files.items()):
        path = folder / relative
        problem = None
        if not path.is_file():
            problem = f"listed in {MANIFEST} but missing"
        elif sha256_file(path) != expected:
            problem = f"sha256 differs from {MANIFEST}"
        if problem is None:
            continue
        if is_rendering(relative):
            log.warning("%s: %s (a rendering; `gradsum report` rewrites it)", path, problem)
            continue
        raise ResultsError(f"{path}: {problem}")


def read_cards(folder: Path) -> dict[str, dict[str, Any]]:
    """The model cards under `cards/`, keyed by file stem (the model's name in the tables).

    Cards carry `task` and a `metrics` object; `name` and `architecture` sit at the top level or, in
    checkpoint cards (`gradsum.models` ModelCard), under `spec`. The returned cards have both on top.
    """
    cards: dict[str, dict[str, Any]] = {}
    for path in sorted((folder / CARDS).glob("*.json")):
        card = read_json_object(path, ResultsError, "JSON")
        spec = card["spec"] if isinstance(card.get("spec"), dict) else {}
        card = {"name": spec.get("name", path.stem), "architecture": spec.get("architecture"), **card}
        missing = [f for f in CARD_FIELDS if card.get(f) is None]
        if missing:
            raise ResultsError(f"{path}: missing field(s) {', '.join(repr(f) for f in missing)}")
        if not isinstance(card["metrics"], dict):
            raise ResultsError(f"{path}: field 'metrics' must be an object")
        cards[path.stem] = card
    return cards


def load_results(path: str | Path) -> Results:
    """Load and validate a results folder; any fault raises `ResultsError` naming the file or column."""
    folder = _folder(path)
    manifest = read_manifest(folder)
    verify_checksums(folder, manifest["files"])
    return read_results(folder, manifest)


def read_results(path: str | Path, manifest: dict[str, Any]) -> Results:
    """The tables and cards of a folder whose manifest is given (not yet written), checked for columns."""
    folder = _folder(path)
    tables = {
        schema.name: read_table(folder, schema, missing_ok=not schema.required) for schema in CORE_TABLES
    }
    return Results(
        path=folder,
        manifest=manifest,
        cards=read_cards(folder),
        checks=read_check_tables(folder, manifest),
        **tables,
    )


def read_check_tables(folder: Path, manifest: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The trust layer's tables that the manifest lists (`trust_tables`), the trust and recommendation
    tables aside (fields of their own)."""
    names = manifest.get("trust_tables", [])
    if not isinstance(names, list):
        raise ResultsError(f"{folder / MANIFEST}: field 'trust_tables' must be a list of table names")
    tables = {}
    for name in map(str, names):
        if name in _OWN_FIELDS:
            continue
        table = read_table(folder, table_schema(name), missing_ok=True)
        if table is None:
            raise ResultsError(
                f"{folder / table_schema(name).file}: listed in {MANIFEST} trust_tables but missing"
            )
        tables[name] = table
    return tables


def _folder(path: str | Path) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise ResultsError(f"{folder}: no such results folder")
    return folder


def folder_checksums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` but the manifest, for the manifest's `files`."""
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    }


def newest_results(root: str | Path = "results") -> Path:
    """The most recently modified run folder under `root` (one holding a manifest.json)."""
    runs = [p.parent for p in Path(root).glob(f"*/{MANIFEST}")]
    if not runs:
        raise ResultsError(f"{root}: no results folder with a {MANIFEST}")
    return max(runs, key=lambda p: ((p / MANIFEST).stat().st_mtime, p.name))
