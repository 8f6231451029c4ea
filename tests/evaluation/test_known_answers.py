"""Known-answer controls through the full path: `run_checks` → the trust table, with every null.

Three models with known mechanisms read fixed bands of rendered synthetic scenes: what lies in a band
changes from scene to scene (buildings, trees, poles, people, cars), so each model's class effects differ
per image, per model and per task. On them:

- the causal oracle (each class's pixels carry the model's own measured erasure effect on that image, so
  class sums equal the effects) passes every causal criterion that is informative on the model;
- the cause-mask oracle localises far beyond every prior (on these masks the positional prior itself beats
  chance, so the check is uninformative, for the oracle too);
- the same construction from the wrong task, image or model does not pass; from another model of the same
  task it scores clearly below the model's own;
- no gating null passes anything: where one would, the criterion is uninformative for every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pytest
import torch
from torch import nn

from gradsum.evaluation import run_checks
from gradsum.evaluation.base import GATING_ROLES, EvaluationContext, PlannedMethod
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.verdicts import PASS, UNINFORMATIVE
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
#: scenes in the test split (evaluated) and the train split (the positional prior's)
TEST, TRAIN = 48, 24


class BandReader(nn.Module):
    """Output = `scale` · (mean of one colour channel over a band of rows − `offset`)."""

    def __init__(self, rows: slice, channel: int, scale: float, offset: float = 0.0) -> None:
        super().__init__()
        self.rows, self.channel, self.scale, self.offset = rows, channel, scale, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, self.channel, self.rows].mean(dim=(1, 2)) - self.offset)[:, None]


def _models() -> list[LoadedModel]:
    # the horizon lies near row 27 of 64: a band across it sees sky, buildings, trees, poles and far
    # objects; a band below it sees road, sidewalk, terrain and the near objects
    bands = {
        "horizon_blue": ("steering", BandReader(slice(18, 34), channel=2, scale=4.0)),
        "ground_green": ("steering", BandReader(slice(34, 52), channel=1, scale=4.0)),
        "ground_red": ("obstacle", BandReader(slice(30, 46), channel=0, scale=60.0, offset=0.4)),
    }
    return [LoadedModel(name, module, {}, task, SIZE) for name, (task, module) in bands.items()]


def _plan(models: Sequence[LoadedModel]) -> dict[str, list[PlannedMethod]]:
    return {m.name: [*CONTROL_EXPLAINERS, *NULL_EXPLAINERS] for m in models}


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    count = TEST + TRAIN + 2
    root = generate(
        tmp_path_factory.mktemp("known") / "set",
        count=count,
        seed=3,
        size=SIZE,
        splits=(TRAIN / count, 2 / count, TEST / count),
    )
    truthset = open_truthset(root, "test")
    assert isinstance(truthset, SyntheticTruthSet)
    models = _models()
    context = EvaluationContext(
        truthset=truthset,
        indices=range(len(truthset)),
        models=models,
        plan=_plan(models),
        targets={"steering": "output", "obstacle": "positive"},
        batch_size=16,
        n_resamples=400,
    )
    return run_checks(context, ["causal", "localisation"]).trust


def _rows(trust: pd.DataFrame, method: str) -> pd.DataFrame:
    return trust[trust["method"] == method].set_index("model")


def test_the_causal_oracle_passes_every_informative_causal_criterion(trust: pd.DataFrame) -> None:
    oracle = _rows(trust, "control:oracle")
    assert set(oracle.index) == {"horizon_blue", "ground_green", "ground_red"}
    # from image to image it follows its own model's effects exactly, and no prior does
    assert (oracle["causal_image_verdict"] == PASS).all(), oracle[["causal_image", "causal_image_reason"]]
    assert oracle["causal_image"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # sum-complete on its own model: every referee-separated class pair of every image is ordered right
    assert oracle["causal"].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=0.05)
    for key in ("causal", "causal_lift"):
        assert set(oracle[f"{key}_verdict"]) <= {PASS, UNINFORMATIVE}, oracle[[key, f"{key}_reason"]]
    # the horizon model reads the sky, buildings and trees: no prior knows that, every criterion decides
    assert set(oracle.loc["horizon_blue", ["causal_verdict", "causal_lift_verdict"]]) == {PASS}
    assert oracle.loc["horizon_blue", "verdict"] == PASS


def test_a_criterion_is_uninformative_exactly_where_a_gating_null_passes_it(trust: pd.DataFrame) -> None:
    # the ground models read the road band, where the task's positional prior puts its mass: a map that
    # knows only the task's usual cause region orders their classes right, so class order cannot tell
    for model, rows in trust.groupby("model"):
        for key in ("causal", "causal_image", "causal_lift", "localisation"):
            gating = rows[rows["role"].isin(GATING_ROLES)]
            informative = (rows[f"{key}_verdict"] != UNINFORMATIVE).all()
            uninformative = (rows[f"{key}_verdict"] == UNINFORMATIVE).all()
            assert informative or uninformative, (model, key)
            assert PASS not in set(gating[f"{key}_verdict"]), (model, key)
            if uninformative:
                assert any("passes" in r for r in rows[f"{key}_reason"]), (model, key)
    ground = _rows(trust, "control:oracle").loc["ground_green"]
    assert ground["causal_verdict"] == UNINFORMATIVE
    assert "null:positional_prior passes" in ground["causal_reason"]


def test_the_cause_mask_oracle_localises_beyond_every_prior(trust: pd.DataFrame) -> None:
    masks = _rows(trust, "control:cause_mask")
    assert masks["localisation"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert (masks["localisation_margin_ci_low"] > 0.5).all()
    # the cause masks sit where they usually sit: the positional prior beats chance, so the check says
    # it cannot tell an explainer from a prior on this truth set, for every row, the oracle included
    assert (masks["localisation_verdict"] == UNINFORMATIVE).all()
    prior = _rows(trust, "null:positional_prior")
    uniform = _rows(trust, "null:uniform")
    assert (prior["localisation"] > 2 * uniform["localisation"]).all()


@pytest.mark.parametrize("control", ["control:other_task", "control:other_image", "control:other_model"])
def test_an_oracle_for_the_wrong_task_image_or_model_does_not_pass(trust: pd.DataFrame, control: str) -> None:
    mismatched = _rows(trust, control)
    assert not (mismatched["causal_image_verdict"] == PASS).any(), mismatched[
        ["causal_image", "causal_image_reason"]
    ]
    assert not (mismatched["verdict"] == PASS).any()
    oracle = _rows(trust, "control:oracle")
    assert (mismatched["causal_image"] < oracle["causal_image"] - 0.3).all()


def test_an_oracle_from_another_model_of_the_task_scores_clearly_below_the_models_own(
    trust: pd.DataFrame,
) -> None:
    other = _rows(trust, "control:other_model").loc[["horizon_blue", "ground_green"]]
    own = _rows(trust, "control:oracle").loc[["horizon_blue", "ground_green"]]
    # the two steering models read different bands: the gap is the point of the comparison
    assert (own["causal"] - other["causal"] > 0.3).all(), (own["causal"], other["causal"])


def test_the_uniform_map_is_chance_on_the_class_figures(trust: pd.DataFrame) -> None:
    uniform = _rows(trust, "null:uniform")
    assert uniform["causal"].tolist() == pytest.approx(_rows(trust, "null:class_area")["causal"].tolist())
    assert uniform["causal_lift"].tolist() == pytest.approx([1.0, 1.0, 1.0])
