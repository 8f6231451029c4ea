from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from gradsum.contract import BOOL, FLOAT, INT, TEXT
from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation import CHECKS, check_options
from gradsum.evaluation.base import CHANCE, CheckResult, EvaluationContext, PlannedMethod
from gradsum.evaluation.checks.shortcut import (
    DETECTION_COLUMNS,
    FINETUNE_COLUMNS,
    FINETUNE_METHOD_COLUMNS,
    METHOD_COLUMNS,
    MODEL_COLUMNS,
    ONSET_COLUMNS,
    SUMMARY_COLUMNS,
    ShortcutCheck,
    ShortcutOptions,
    permutation_p_value,
    series_members,
    shortcut_predictions,
)
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet, TruthSet, open_truthset
from gradsum.truthsets.labels import ignored_cityscapes_ids
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (32, 64)
SKY, ROAD = 23, 7
#: the rows the tint reader averages: sky in nearly every pixel of every generated scene
TOP = 3
#: the rows the oracle averages: ground only, never sky
BOTTOM = 4
#: between the warm and the cool sky's red − blue, so a tint reader steers right on warm, left on cool
MIDPOINT = -70 / 255
SKY_MAP = "skyweight"
UNIFORM = PlannedMethod("uniform", label="null:uniform", normalise="sum", role=CHANCE)
#: model → (tint reader gain k (None: the oracle), rho, sky weight of the planted maps)
SERIES: dict[str, tuple[float | None, float, float]] = {
    "fair": (None, 0.0, 1.0),
    "tint90": (1.0, 0.9, 2.0),
    "tint99": (3.0, 0.99, 4.0),
    "tint99_ft": (0.5, 0.99, 1.5),
}
N_RESAMPLES = 200


class TintReader(nn.Module):
    """Output = k·(mean red − mean blue − MIDPOINT) over the top rows: the warm tint (+red, −blue) steers
    right. Sky red − blue is about −30/255 warm and −110/255 cool (render's `_SKY_TINT`, blue clipped)."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x[:, :, :TOP]
        return self.k * ((top[:, 0] - top[:, 2]).mean(dim=(1, 2)) - MIDPOINT)[:, None]


class GroundReader(nn.Module):
    """Output = 0.01·mean green of the bottom rows, where no sky is: blind to the tint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.01 * x[:, 1, -BOTTOM:].mean(dim=(1, 2))[:, None]


def _by_hand(name: str, image: np.ndarray) -> float:
    """The model's output computed in numpy on a uint8 frame."""
    k = SERIES[name][0]
    pixels = image.astype(np.float64) / 255
    if k is None:
        return 0.01 * float(pixels[-BOTTOM:, :, 1].mean())
    return k * (float((pixels[:TOP, :, 0] - pixels[:TOP, :, 2]).mean()) - MIDPOINT)


def _card(name: str) -> dict[str, Any]:
    _, rho, _ = SERIES[name]
    card: dict[str, Any] = {
        "spec": {"name": "toy"},
        "truthset": {"parameters": {"shortcut": rho}},
        "weights_sha256": f"sha-{name}",
        "finetune": {},
    }
    if name.endswith("_ft"):
        card["finetune"] = {"base_weights_sha256": "sha-tint99", "seed": 7}
    return card


def _models() -> list[LoadedModel]:
    models = [
        LoadedModel(name, GroundReader() if k is None else TintReader(k), _card(name), "steering", SIZE)
        for name, (k, _, _) in SERIES.items()
    ]
    models.append(LoadedModel("obstacle", TintReader(1.0), _card("tint90"), "obstacle", SIZE))
    return models


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("shortcut") / "set", count=30, size=SIZE, decorrelated=True)


@pytest.fixture(scope="module")
def train(root: Path) -> SyntheticTruthSet:
    truthset = open_truthset(root, "train")
    assert isinstance(truthset, SyntheticTruthSet)
    return truthset


def _context(truthset: TruthSet, models: list[LoadedModel], **kwargs: Any) -> EvaluationContext:
    plan = {
        m.name: [PlannedMethod("uniform", label=SKY_MAP), UNIFORM] for m in models if m.task == "steering"
    }
    plan["obstacle"] = [UNIFORM]
    return EvaluationContext(
        truthset=truthset,
        indices=range(8),
        models=models,
        plan=plan,
        targets={},
        batch_size=3,
        n_resamples=N_RESAMPLES,
        **kwargs,
    )


def _plant_sky_maps(context: EvaluationContext, truthset: TruthSet) -> None:
    """Maps valued w on sky pixels and 1 elsewhere, w per model (`SERIES`), kept as the run's maps."""
    for index in context.indices:
        sample = truthset[index]
        sky = torch.from_numpy(sample.labels == SKY)
        for name, (_, _, weight) in SERIES.items():
            maps = torch.where(sky, weight, 1.0)[None].float()
            context.remember(name, SKY_MAP, [sample.meta["frame"]], maps)


@pytest.fixture(scope="module")
def checked(train: SyntheticTruthSet) -> tuple[EvaluationContext, CheckResult]:
    context = _context(train, _models())
    _plant_sky_maps(context, train)
    return context, CHECKS.get("shortcut")().run(context)


def _row(frame: pd.DataFrame, **keys: object) -> pd.Series:
    selected = frame
    for column, value in keys.items():
        selected = selected[selected[column] == value]
    assert len(selected) == 1, keys
    return selected.iloc[0]


def test_the_check_is_registered_with_its_criterion(checked: tuple[EvaluationContext, CheckResult]) -> None:
    _, result = checked
    assert isinstance(CHECKS.get("shortcut")(), ShortcutCheck)
    assert set(result.tables) == {
        "shortcut_models",
        "shortcut_methods",
        "shortcut_detection",
        "shortcut_onset",
        "shortcut_finetune",
        "shortcut_finetune_methods",
    }
    columns = {
        "shortcut_models": MODEL_COLUMNS,
        "shortcut_methods": METHOD_COLUMNS,
        "shortcut_detection": DETECTION_COLUMNS,
        "shortcut_onset": ONSET_COLUMNS,
        "shortcut_finetune": FINETUNE_COLUMNS,
        "shortcut_finetune_methods": FINETUNE_METHOD_COLUMNS,
    }
    for name, expected in columns.items():
        assert list(result.tables[name].columns) == list(expected), name
    assert list(result.summary.columns) == list(SUMMARY_COLUMNS)
    # the claim is about models: the permutation p over models decides, not the image bootstrap
    assert [(c.check, c.column, c.over, c.higher_is_better) for c in result.criteria] == [
        ("shortcut", "shortcut_detection", "models", True)
    ]
    # steering models only, every planned method (the null included)
    assert set(result.summary["model"]) == set(SERIES)
    assert len(result.summary) == len(SERIES) * 2
    detection = result.tables["shortcut_detection"].set_index("method")
    # each model's row repeats its method's detection figures (NaN for the uniform map)
    for suffix, column in (
        ("", "spearman"),
        ("_ci_low", "spearman_ci_low"),
        ("_ci_high", "spearman_ci_high"),
        ("_p", "p_value"),
    ):
        expected = result.summary["method"].map(detection[column])
        np.testing.assert_array_equal(result.summary[f"shortcut_detection{suffix}"], expected)


def test_the_pull_is_the_signed_output_change_of_the_tint_flip(
    checked: tuple[EvaluationContext, CheckResult], train: SyntheticTruthSet
) -> None:
    _, result = checked
    models = result.tables["shortcut_models"].set_index("model")
    assert list(models.index) == list(SERIES)  # the obstacle model gets no row
    pulls: dict[str, list[float]] = {name: [] for name in SERIES}
    effects: dict[str, list[float]] = {name: [] for name in SERIES}
    for index in range(8):
        original, flipped = train[index], train.flip_tint(index)
        tint = flipped.meta["flip_tint"]
        for name in SERIES:
            change = _by_hand(name, flipped.image) - _by_hand(name, original.image)
            pulls[name].append(change * (tint["to"] - tint["from"]) / 2)
            effects[name].append(abs(change))
    for name in SERIES:
        row = models.loc[name]
        assert row["pull"] == pytest.approx(np.mean(pulls[name]), abs=1e-6)
        assert row["abs_effect"] == pytest.approx(np.mean(effects[name]), abs=1e-6)
        assert row["pull_ci_low"] <= row["pull"] <= row["pull_ci_high"]
        assert row["n_images"] == 8
    # the oracle reads no sky pixel: the flip changes nothing it sees
    assert models.loc["fair", "pull"] == 0.0 and models.loc["fair", "abs_effect"] == 0.0
    # the tint readers move towards the new tint's side, in proportion to their gain
    assert 0 < models.loc["tint99_ft", "pull"] < models.loc["tint90", "pull"] < models.loc["tint99", "pull"]
    assert models.loc["tint99", "pull"] == pytest.approx(3 * models.loc["tint90", "pull"], rel=1e-5)
    assert (models["series"] == "toy").all()
    assert models["finetuned"].tolist() == [False, False, False, True]
    assert models["base"].tolist() == ["", "", "", "tint99"]
    assert models["rho"].tolist() == [0.0, 0.9, 0.99, 0.99]


def _r2(targets: np.ndarray, outputs: np.ndarray) -> float:
    return 1 - float(np.mean((outputs - targets) ** 2)) / float(np.var(targets))


def test_tint_split_errors_match_numpy(checked: tuple[EvaluationContext, CheckResult], root: Path) -> None:
    _, result = checked
    models = result.tables["shortcut_models"].set_index("model")
    splits = {"test": "test", "agreeing": "test_agreeing", "decorrelated": "test_decorrelated"}
    samples = {column: list(open_truthset(root, split)) for column, split in splits.items()}
    targets = np.array([s.targets["steering"] for s in samples["decorrelated"]])
    for column in splits:
        # the tint splits are the test scenes again: the same targets
        assert [s.targets["steering"] for s in samples[column]] == pytest.approx(targets.tolist())
    for name, (_, rho, _) in SERIES.items():
        row = models.loc[name]
        outputs = {c: np.array([_by_hand(name, s.image) for s in samples[c]]) for c in splits}
        for column in splits:
            assert row[f"r2_{column}"] == pytest.approx(_r2(targets, outputs[column]), abs=1e-5)
            mae = np.abs(outputs[column] - targets).mean()
            assert row[f"mae_{column}"] == pytest.approx(mae, abs=1e-6)
        p = rho if rho > 0 else 0.5
        mse = {c: np.mean((outputs[c] - targets) ** 2) for c in ("agreeing", "decorrelated")}
        in_distribution = 1 - (p * mse["agreeing"] + (1 - p) * mse["decorrelated"]) / np.var(targets)
        assert row["r2_in_distribution"] == pytest.approx(in_distribution, abs=1e-5)
        assert row["gap"] == pytest.approx(row["r2_agreeing"] - row["r2_decorrelated"], abs=1e-12)
        for figure in ("r2_decorrelated", "r2_in_distribution"):
            assert row[f"{figure}_ci_low"] <= row[f"{figure}_ci_high"]
    # a tint reader does better where the tint agrees with the steering sign
    assert models.loc["tint99", "gap"] > 0


def _shares(truthset: TruthSet, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Per evaluated image: the sky and road shares of a map valued `weight` on sky, 1 elsewhere."""
    sky, road = [], []
    for index in range(8):
        labels = truthset[index].labels
        assert not np.isin(labels, ignored_cityscapes_ids()).any()
        n_sky = float((labels == SKY).sum())
        total = weight * n_sky + labels.size - n_sky
        sky.append(weight * n_sky / total)
        road.append(float((labels == ROAD).sum()) / total)
    return np.array(sky), np.array(road)


def test_method_figures_follow_the_planted_maps(
    checked: tuple[EvaluationContext, CheckResult], train: SyntheticTruthSet
) -> None:
    _, result = checked
    methods = result.tables["shortcut_methods"]
    assert set(methods["model"]) == set(SERIES)
    fair_sky, _ = _shares(train, 1.0)
    for name, (_, rho, weight) in SERIES.items():
        sky, road = _shares(train, weight)
        row = _row(methods, model=name, method=SKY_MAP)
        assert not row["null"] and row["rho"] == rho and row["series"] == "toy"
        assert row["cue_mass_share"] == pytest.approx(sky.mean(), abs=1e-9)
        assert row["foreground_mass_share"] == pytest.approx(road.mean(), abs=1e-9)
        assert row["cue_mass_share_ci_low"] <= row["cue_mass_share"] <= row["cue_mass_share_ci_high"]
        # the sky score: mean map value over sky pixels
        assert row["cue_score"] == pytest.approx(weight, abs=1e-9)
        if name == "fair":
            assert math.isnan(row["mass_diff_vs_fair"]) and not row["detected"]
        else:
            assert row["mass_diff_vs_fair"] == pytest.approx((sky - fair_sky).mean(), abs=1e-9)
            assert row["mass_diff_vs_fair_ci_low"] > 0 and row["detected"]
        # the uniform map's sky share is the sky's area share, the same for every model: nothing detected
        uniform = _row(methods, model=name, method=UNIFORM.label)
        assert uniform["null"] and uniform["cue_mass_share"] == pytest.approx(_shares(train, 1.0)[0].mean())
        assert not uniform["detected"]


def test_detection_ranks_models_by_pull_and_onset_finds_the_smallest_rho(
    checked: tuple[EvaluationContext, CheckResult],
) -> None:
    _, result = checked
    detection = result.tables["shortcut_detection"].set_index("method")
    sky = detection.loc[SKY_MAP]
    assert not sky["null"] and sky["n_models"] == len(SERIES)
    assert (sky["spearman"], sky["spearman_ci_low"], sky["spearman_ci_high"]) == pytest.approx((1, 1, 1))
    assert sky["spearman_vs_rho"] == pytest.approx(1.0)
    masses = (
        result.tables["shortcut_methods"].query("method == @SKY_MAP").set_index("model")["cue_mass_share"]
    )
    pulls = result.tables["shortcut_models"].set_index("model")["pull"]
    assert masses[list(SERIES)].rank().tolist() == pulls[list(SERIES)].rank().tolist()
    # every pairing of the models enumerated: the exact one-sided p of a perfect rank order is 1/n!
    assert sky["p_value"] == pytest.approx(1 / math.factorial(len(SERIES)))
    # a constant sky share across models has no ranking
    uniform = detection.loc[UNIFORM.label]
    assert uniform["null"] and math.isnan(uniform["spearman"]) and math.isnan(uniform["spearman_ci_low"])
    assert math.isnan(uniform["p_value"]) and math.isnan(uniform["spearman_vs_rho"])
    summary = result.summary.set_index(["model", "method"])
    assert summary.loc[("tint90", SKY_MAP), "shortcut_detection"] == pytest.approx(1.0)

    onset = result.tables["shortcut_onset"].set_index("method")
    assert onset.loc[SKY_MAP, "series"] == "toy"
    assert onset.loc[SKY_MAP, "first_rho"] == 0.9 and onset.loc[SKY_MAP, "rhos_detected"] == "0.9,0.99"
    assert (
        math.isnan(onset.loc[UNIFORM.label, "first_rho"]) and onset.loc[UNIFORM.label, "rhos_detected"] == ""
    )


def test_a_finetuned_model_is_set_beside_its_base(checked: tuple[EvaluationContext, CheckResult]) -> None:
    _, result = checked
    models = result.tables["shortcut_models"].set_index("model")
    finetune = result.tables["shortcut_finetune"]
    assert len(finetune) == 1
    row = finetune.iloc[0]
    assert (row["model"], row["base"], row["seed"], row["rho"]) == ("tint99_ft", "tint99", 7, 0.99)
    for figure in ("r2_decorrelated", "r2_in_distribution", "r2_test", "pull"):
        assert row[f"{figure}_before"] == models.loc["tint99", figure]
        assert row[f"{figure}_after"] == models.loc["tint99_ft", figure]
    before, after, clean = (models.loc[m, "r2_decorrelated"] for m in ("tint99", "tint99_ft", "fair"))
    assert clean > before
    assert row["gap_recovered"] == pytest.approx((after - before) / (clean - before))

    pairs = result.tables["shortcut_finetune_methods"].set_index("method")
    assert set(pairs.index) == {SKY_MAP, UNIFORM.label}
    methods = result.tables["shortcut_methods"].set_index(["model", "method"])
    for figure in ("cue_mass_share", "foreground_mass_share"):
        assert pairs.loc[SKY_MAP, f"{figure}_before"] == methods.loc[("tint99", SKY_MAP), figure]
        assert pairs.loc[SKY_MAP, f"{figure}_after"] == methods.loc[("tint99_ft", SKY_MAP), figure]


def test_cards_without_a_rho_or_a_base_in_the_run() -> None:
    card = {"spec": {"name": "vit"}, "finetune": {"base_weights_sha256": "elsewhere", "seed": 1}}
    members = series_members([LoadedModel("lone", GroundReader(), card, "steering", SIZE)])
    lone = members["lone"]
    assert lone.series == "vit" and math.isnan(lone.rho) and math.isnan(lone.agreement)
    assert lone.finetuned and lone.base == "" and lone.seed == 1


def test_predictions_read_the_first_error_images(train: SyntheticTruthSet) -> None:
    context = _context(train, _models()[:1])
    predictions = shortcut_predictions(context, ShortcutOptions(error_images=2))
    assert sorted(set(predictions["split"])) == ["test", "test_agreeing", "test_decorrelated"]
    assert predictions.groupby("split")["index"].apply(list).tolist() == [[0, 1]] * 3
    assert shortcut_predictions(context, ShortcutOptions(error_images=2)) is predictions  # read once
    with pytest.raises(SpecError, match=r"evaluation\.options\.shortcut: unknown field 'tint'"):
        check_options("shortcut", {"tint": "warm"})


def test_a_truth_set_that_cannot_repaint_the_tint_is_refused() -> None:
    images = np.zeros((2, *SIZE, 3), dtype=np.uint8)
    truthset = ArrayTruthSet(images, np.full((2, *SIZE), SKY, dtype=np.uint8))
    context = _context(truthset, _models()[:1])
    with pytest.raises(GradSUMError, match=r"<memory>: the shortcut check needs a synthetic truth set"):
        ShortcutCheck().run(context)


def test_a_synthetic_set_without_tint_splits_is_refused(tmp_path: Path) -> None:
    plain = generate(tmp_path / "plain", count=3, size=SIZE)
    context = _context(open_truthset(plain, "test"), _models()[:1])
    context.indices = range(1)
    with pytest.raises(GradSUMError, match=r"no split 'test_decorrelated'") as error:
        ShortcutCheck().run(context)
    assert str(plain) in str(error.value)
    assert "truthset.generate.decorrelated: true" in str(error.value)
    assert "gradsum generate --decorrelated" in str(error.value)


def test_without_planned_methods_only_the_model_figures_remain(
    checked: tuple[EvaluationContext, CheckResult], train: SyntheticTruthSet
) -> None:
    context = _context(train, _models())
    context.plan = {}
    result = ShortcutCheck().run(context)
    pd.testing.assert_frame_equal(result.tables["shortcut_models"], checked[1].tables["shortcut_models"])
    for name in ("shortcut_methods", "shortcut_detection", "shortcut_onset", "shortcut_finetune_methods"):
        assert result.tables[name].empty, name
    assert len(result.tables["shortcut_finetune"]) == 1
    assert result.summary.empty and result.criteria == []


def test_no_steering_model_gives_empty_tables_and_unknown_classes_are_refused(
    train: SyntheticTruthSet,
) -> None:
    obstacle = [m for m in _models() if m.task == "obstacle"]
    result = ShortcutCheck().run(_context(train, obstacle))
    assert all(table.empty for table in result.tables.values()) and result.summary.empty
    assert list(result.tables["shortcut_models"].columns) == list(MODEL_COLUMNS)
    context = _context(train, obstacle, options={"shortcut": {"foreground": ["road", "lane"]}})
    with pytest.raises(SpecError, match=r"class\(es\) lane not in the truth set"):
        ShortcutCheck().run(context)


def test_the_permutation_p_value_is_exact_for_few_models() -> None:
    x, y = np.array([0.244, 0.248, 0.254, 0.259]), np.array([0.0, 0.001, 0.004, 0.010])
    # 4 models in perfect order: 1 of the 24 pairings reaches ρ = 1; reversed, all 24 reach ρ ≥ -1
    assert permutation_p_value(x, y, np.random.default_rng(0)) == pytest.approx(1 / 24)
    assert permutation_p_value(x, -y, np.random.default_rng(0)) == pytest.approx(1.0)
    # one swap (ρ = 0.8): the identity and the 3 adjacent swaps reach 0.8, so 4 of 24
    assert permutation_p_value(x, y[[1, 0, 2, 3]], np.random.default_rng(0)) == pytest.approx(4 / 24)


def test_the_tables_have_their_declared_columns_and_dtypes(
    checked: tuple[EvaluationContext, CheckResult],
) -> None:
    _, result = checked
    accepts = {
        TEXT: pd.api.types.is_string_dtype,
        BOOL: pd.api.types.is_bool_dtype,
        INT: pd.api.types.is_integer_dtype,
        FLOAT: pd.api.types.is_float_dtype,
    }
    assert list(result.tables) == [schema.name for schema in ShortcutCheck.tables]
    faults = [
        f"{schema.name}.{name}: {result.tables[schema.name][name].dtype}, declared {dtype}"
        for schema in ShortcutCheck.tables
        if not result.tables[schema.name].empty
        for name, dtype in schema.columns
        if not accepts[dtype](result.tables[schema.name][name].dtype)
    ]
    assert faults == []
