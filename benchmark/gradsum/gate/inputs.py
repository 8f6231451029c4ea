"""What the gate reads from a results folder, and the refusals that make two folders comparable.

A gate compares a candidate with a baseline image by image, so both must profile the same frames of the
same truth set (the manifest's `truthset` kind, parameters and split, and the per_image image ids) and each
paired model must be trained for the same task (its card's `task`). Anything else is an input error naming
the file and field at fault, which the CLI turns into exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradsum.contract import CARDS, MANIFEST, PER_IMAGE, RECOMMENDATIONS, TRUST, read_table
from gradsum.errors import GradSUMError, ResultsError
from gradsum.fileio import read_json_object

if TYPE_CHECKING:
    import pandas as pd

#: The manifest's description of the truth set a run profiled, and the fields two runs must share.
TRUTHSET = "truthset"
TRUTHSET_FIELDS = ("kind", "parameters", "split")


class GateInputError(GradSUMError):
    """Two results folders cannot be gated against each other (another truth set, task or model)."""


@dataclass(frozen=True)
class GateInputs:
    """One results folder as the gate reads it: its manifest, per-image scores, trust tables and cards.

    `trust` and `recommendations` are None where the run had no trust layer; `cards` maps each model (the
    name in the tables) to its card. `folder` names the files in messages.
    """

    folder: Path
    manifest: dict[str, Any]
    per_image: pd.DataFrame
    trust: pd.DataFrame | None = None
    recommendations: pd.DataFrame | None = None
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def models(self) -> list[str]:
        """The models of the per_image table, sorted."""
        return sorted(str(m) for m in self.per_image["model"].unique())

    def card_path(self, model: str) -> Path:
        """Where `model`'s card is stored."""
        return self.folder / CARDS / f"{model}.json"

    def table_path(self, file: str) -> Path:
        """Where a table file of this folder is stored."""
        return self.folder / file


def read_results(folder: str | os.PathLike[str]) -> GateInputs:
    """The gate's view of the results folder `folder`; a missing folder, manifest or table raises
    `ResultsError` naming it."""
    root = Path(folder)
    if not root.is_dir():
        raise ResultsError(f"{root}: no such results folder")
    manifest = read_json_object(root / MANIFEST, ResultsError, "manifest")
    return GateInputs(
        folder=root,
        manifest=manifest,
        per_image=read_table(root, PER_IMAGE),
        trust=read_table(root, TRUST, missing_ok=True),
        recommendations=read_table(root, RECOMMENDATIONS, missing_ok=True),
        cards={path.stem: read_json_object(path, ResultsError, "model card") for path in _cards(root)},
    )


def _cards(root: Path) -> list[Path]:
    return sorted((root / CARDS).glob("*.json"))


def as_inputs(results: str | os.PathLike[str] | GateInputs) -> GateInputs:
    """`results` itself, or the folder it names read."""
    return results if isinstance(results, GateInputs) else read_results(results)


def check_same_truthset(baseline: GateInputs, candidate: GateInputs) -> None:
    """Refuse a candidate that profiled another truth set, split or set of frames than the baseline."""
    base, cand = _truthset(baseline), _truthset(candidate)
    for name in TRUTHSET_FIELDS:
        if base.get(name) != cand.get(name):
            raise GateInputError(
                f"{candidate.folder / MANIFEST}: field '{TRUTHSET}.{name}' is {cand.get(name)!r}, the "
                f"baseline's ({baseline.folder / MANIFEST}) is {base.get(name)!r}: the candidate profiled "
                "another truth set, so its profiles cannot be paired image by image"
            )
    base_ids, cand_ids = _image_ids(baseline), _image_ids(candidate)
    if base_ids != cand_ids:
        only = sorted(base_ids ^ cand_ids)
        raise GateInputError(
            f"{candidate.table_path(PER_IMAGE.file)}: the candidate scored {len(cand_ids)} images, the "
            f"baseline {len(base_ids)}, {len(only)} of them on one side only (e.g. {only[0]!r}): both "
            "must profile the same frames"
        )


def _truthset(inputs: GateInputs) -> Mapping[str, Any]:
    described = inputs.manifest.get(TRUTHSET)
    if not isinstance(described, dict):
        raise GateInputError(
            f"{inputs.folder / MANIFEST}: field '{TRUTHSET}' is missing; the gate needs to know which truth "
            "set a run profiled"
        )
    return described


def _image_ids(inputs: GateInputs) -> set[str]:
    return {str(i) for i in inputs.per_image["image"].unique()}


def pair_models(
    baseline: GateInputs, candidate: GateInputs, models: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Baseline model → candidate model: `models` when given, else the names both hold, else the only
    model of each side. An unknown name raises naming the side's valid models."""
    base, cand = baseline.models, candidate.models
    if models:
        pairs = dict(models)
    elif set(base) & set(cand):
        pairs = {name: name for name in base if name in cand}
    elif len(base) == len(cand) == 1:
        pairs = {base[0]: cand[0]}
    else:
        raise GateInputError(
            f"{candidate.table_path(PER_IMAGE.file)}: no model shares a name with the baseline's "
            f"({', '.join(base)}); pair them with --model BASE=CANDIDATE (candidate models: {', '.join(cand)})"
        )
    for side, names, chosen in (("baseline", base, pairs), ("candidate", cand, pairs.values())):
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise GateInputError(
                f"--model: the {side} holds no model {unknown[0]!r}; valid: {', '.join(names)}"
            )
    return pairs


def check_same_tasks(baseline: GateInputs, candidate: GateInputs, pairs: Mapping[str, str]) -> None:
    """Refuse a paired candidate model trained for another task than its baseline model."""
    for model, other in pairs.items():
        expected, got = card_task(baseline, model), card_task(candidate, other)
        if expected != got:
            raise GateInputError(
                f"{candidate.card_path(other)}: field 'task' is {got!r}; the baseline's {model!r} "
                f"({baseline.card_path(model)}) is a {expected!r} model"
            )


def card_task(inputs: GateInputs, model: str) -> str:
    """The task of `model`'s card."""
    task = card(inputs, model).get("task")
    if not isinstance(task, str):
        raise GateInputError(f"{inputs.card_path(model)}: field 'task' is missing")
    return task


def card(inputs: GateInputs, model: str) -> dict[str, Any]:
    """`model`'s card; a missing one raises naming where it should be."""
    found = inputs.cards.get(model)
    if found is None:
        raise GateInputError(f"{inputs.card_path(model)}: model card is missing")
    return found


def required_table(inputs: GateInputs, table: pd.DataFrame | None, file: str, why: str) -> pd.DataFrame:
    """`table`, or an error naming the file it should have been read from and why it is needed."""
    if table is None:
        raise GateInputError(f"{inputs.table_path(file)}: missing; {why}")
    return table
