"""A trust check added from outside the package, as docs/design.md's recipe adds one: a `TrustCheck`
subclass with its `Options` and `tables`, registered with `@register_check`, runs through `run_checks`
and `gradsum evaluate --checks`, its rows reach the trust table, and `CHECKS.unregister` removes it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradsum.cli import main
from gradsum.errors import SpecError
from gradsum.evaluation import (
    CHECKS,
    CheckResult,
    Criterion,
    EvaluationContext,
    PlannedMethod,
    TrustCheck,
    register_check,
)
from gradsum.evaluation.base import check_table
from gradsum.evaluation.trust import run_checks
from gradsum.evaluation.verdicts import OUTCOMES
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline import config_from_dict, run
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

NAME = "mean_map"
TABLE = check_table(NAME, ("model", "method", "image", NAME))
CRITERION = Criterion(NAME, NAME, threshold=0.0, against_nulls=False, evidence=False, text="mean map value")


@dataclass(frozen=True)
class MeanMapOptions:
    #: the first N evaluated images
    images: int = 2


class MeanMapCheck(TrustCheck):
    """Each planned method's mean map value per image: a check that needs nothing but the maps."""

    description = "the mean of each map, per image"
    Options = MeanMapOptions
    tables = (TABLE,)

    def evaluate(self, context: EvaluationContext, options: MeanMapOptions) -> CheckResult:
        rows = []
        for ids, images, labels, indices in context.batches():
            label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64))
            for model in context.models:
                batch = context.model_input(model, images)
                for planned in context.plan.get(model.name, ()):
                    maps = context.maps(model, planned, batch, label_tensor, ids, indices)
                    for image, value in zip(ids, maps.mean(dim=(1, 2)).tolist(), strict=True):
                        rows.append(
                            {"model": model.name, "method": planned.name, "image": image, NAME: value}
                        )
        per_image = pd.DataFrame(rows, columns=list(TABLE.names))
        per_image = per_image[per_image["image"].isin(per_image["image"].unique()[: options.images])]
        summary = per_image.groupby(["model", "method"], as_index=False)[NAME].mean()
        return CheckResult({NAME: per_image}, summary, [CRITERION], per_image=per_image)


@pytest.fixture
def registered() -> Iterator[type[MeanMapCheck]]:
    check = register_check(NAME)(MeanMapCheck)
    try:
        yield check
    finally:
        CHECKS.unregister(NAME)
    assert NAME not in CHECKS


RUN = {
    "name": "plain",
    "truthset": {"path": "synth", "split": "test", "generate": {"count": 20, "seed": 4, "size": [64, 128]}},
    "models": [{"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}}],
    "methods": [{"method": "gradcam"}],
    "bootstrap_resamples": 20,
    "overlays": 0,
    "evaluation": {"checks": [], "bootstrap_resamples": 20, "nulls": False, "controls": False},
}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extension")
    data = json.loads(json.dumps(RUN))
    data["truthset"]["path"] = str(root / "synth")
    data["models_dir"] = str(root / "models")
    return run(config_from_dict(data), out=root / "results" / "plain")


def test_an_outside_check_runs_through_run_checks(registered: type[MeanMapCheck], tmp_path: Path) -> None:
    size = (64, 128)
    truthset = open_truthset(
        generate(tmp_path / "set", count=10, seed=1, size=size, splits=(0.2, 0.2, 0.6)), "test"
    )
    torch.manual_seed(0)
    model = LoadedModel("pilot", build_model("pilotnet", size).eval(), {}, "steering", size)
    context = EvaluationContext(
        truthset=truthset,
        indices=range(3),
        models=[model],
        plan={"pilot": [PlannedMethod("gradcam", label="gradcam")]},
        targets={"steering": "output"},
        n_resamples=20,
        options={NAME: {"images": 3}},
    )
    report = run_checks(context, [NAME])
    rows = report.tables()[NAME]
    assert len(rows) == 3 and set(rows["method"]) == {"gradcam"}
    # the figure is the maps' mean, as the context computes the maps
    expected = report.results[NAME].summary[NAME].iloc[0]
    assert expected == pytest.approx(rows[NAME].mean())
    assert report.trust.loc[0, f"{NAME}_verdict"] in OUTCOMES


def test_an_outside_check_runs_through_the_cli_and_reaches_the_trust_table(
    registered: type[MeanMapCheck], results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(results, folder)
    assert main(["evaluate", str(folder), "--checks", NAME, "--images", "3"]) == 0
    table = pd.read_csv(folder / TABLE.file)
    assert list(table.columns) == list(TABLE.names)
    assert table["image"].nunique() == 2  # the option's default
    trust = pd.read_csv(folder / "trust.csv")
    assert f"{NAME}_verdict" in trust.columns and set(trust["method"]) == {"gradcam"}
    assert json.loads((folder / "manifest.json").read_text())["config"]["evaluation"]["checks"] == [NAME]


def test_an_outside_checks_options_are_built_and_checked(registered: type[MeanMapCheck]) -> None:
    from gradsum.evaluation import check_options

    assert check_options(NAME, {"images": 1}) == MeanMapOptions(1)
    with pytest.raises(SpecError, match=r"evaluation\.options\.mean_map: unknown field 'image'"):
        check_options(NAME, {"image": 1})
