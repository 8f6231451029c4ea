"""The label-quality study: its config, its figures against a recomputation, and its known-answer levels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from gradsum.aggregation.label_quality import profile
from gradsum.attribution import attribute
from gradsum.contract import LABEL_TABLES, REPORT, TRUST, read_table
from gradsum.errors import SpecError, UnknownNameError
from gradsum.labelling.metrics import confusion_matrix, scores
from gradsum.models import load_model
from gradsum.models.inputs import model_input
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.label_quality import figure_rng, verdict_changes
from gradsum.pipeline.label_quality import score_matrix as study_scores
from gradsum.truthsets import open_truthset
from gradsum.truthsets.degrade import DEGRADATIONS, Degradation, degradation, register_degradation
from gradsum.truthsets.labels import CITYSCAPES


@dataclass(frozen=True)
class Unchanged(Degradation):
    """The known-answer level: the exact labels themselves (nothing may change)."""

    @property
    def level(self) -> str:
        return "unchanged"

    def describe(self) -> str:
        return "the exact labels"

    def degrade(self, labels: np.ndarray) -> np.ndarray:
        return labels.copy()


@pytest.fixture(scope="module", autouse=True)
def _unchanged_registered() -> Iterator[None]:
    # registered for this module's tests only: the degradations' own tests list the registry
    register_degradation("unchanged")(Unchanged)
    yield
    DEGRADATIONS.unregister("unchanged")


def study_config(
    root: Path, labels: dict[str, Any] | None, checks: list[str] | None = None
) -> dict[str, Any]:
    return {
        "name": "labels",
        "truthset": {"path": str(root / "synth"), "split": "test", "generate": {"count": 160, "seed": 3}},
        "models": [{"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}}],
        "methods": [{"method": "gradcam"}],
        "evaluation": {"checks": ["localisation"] if checks is None else checks, "images": 12},
        "labels": labels,
        "batch_size": 8,
        "workers": 0,
        "bootstrap_resamples": 50,
        "overlays": 1,
        "attention_diagnostics": False,
        "models_dir": str(root / "models"),
        "results_dir": str(root / "results"),
    }


STUDY = {
    "degradations": [{"name": "unchanged"}, {"name": "erode", "params": {"k": 2}}],
    "pseudo": {"budgets": [2], "batch_size": 4, "folder": "SEGMENTERS"},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame], dict[str, Any]]:
    root = tmp_path_factory.mktemp("labels")
    labels = {**STUDY, "pseudo": {**STUDY["pseudo"], "folder": str(root / "segmenters")}}
    data = study_config(root, labels)
    folder = run(config_from_dict(data), out=root / "results" / "labels")
    tables = {schema.name: read_table(folder, schema) for schema in LABEL_TABLES}
    return folder, tables, data


def test_config_refuses_unknown_names_and_a_study_without_evaluated_images(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"labels\.degradations\[0\].*erodes.*valid: .*erode"):
        config_from_dict(study_config(tmp_path, {"degradations": [{"name": "erodes"}]}))
    with pytest.raises(SpecError, match=r"labels\.degradations\[0\].*'k'"):
        config_from_dict(study_config(tmp_path, {"degradations": [{"name": "erode", "params": {"k": 0}}]}))
    with pytest.raises(
        UnknownNameError, match=r"labels\.pseudo\.architecture.*valid: .*lraspp_mobilenet_v3_large"
    ):
        config_from_dict(study_config(tmp_path, {"pseudo": {"architecture": "unet"}}))
    with pytest.raises(SpecError, match=r"labels: .*evaluation\.checks"):
        config_from_dict(
            study_config(tmp_path, {"degradations": [{"name": "erode", "params": {"k": 1}}]}, [])
        )


def test_every_level_is_scored_against_the_exact_labels(
    study: tuple[Path, dict[str, pd.DataFrame], Any],
) -> None:
    _, tables, data = study
    levels = tables["label_levels"].set_index("level")
    assert list(levels.index) == ["unchanged", "erode_2", "pseudo_2"]
    truthset = open_truthset(data["truthset"]["path"], "test")
    exact = np.stack([truthset[i].labels for i in range(12)])
    eroded = np.stack([degradation("erode", k=2)(labels) for labels in exact])
    expected = scores(confusion_matrix(exact, eroded))
    assert levels.loc["erode_2", "miou"] == pytest.approx(expected.miou)
    assert levels.loc["erode_2", "pixel_accuracy"] == pytest.approx(expected.pixel_accuracy)
    assert levels.loc["erode_2", "void_share"] == pytest.approx(float((eroded == 0).mean()))
    assert levels.loc["unchanged", "miou"] == 1.0 and levels.loc["unchanged", "void_share"] == 0.0
    # the pseudo level records its segmenter and that segmenter's own held-out mIoU
    assert 0.0 <= levels.loc["pseudo_2", "held_out_miou"] <= 1.0
    assert "pseudo" in levels.loc["pseudo_2", "kind"]


@pytest.fixture(scope="module")
def recomputed(study: tuple[Path, dict[str, pd.DataFrame], Any]) -> tuple[np.ndarray, np.ndarray]:
    """The study's evaluated images recomputed outside the pipeline: GradCAM maps and exact labels."""
    _, _, data = study
    truthset = open_truthset(data["truthset"]["path"], "test")
    samples = [truthset[i] for i in range(12)]
    module, card = load_model(Path(data["models_dir"]) / "pilotnet")
    batch = model_input([s.image for s in samples], tuple(card.spec["img_size"]))
    maps = attribute(module, batch, "gradcam", task="steering").maps.detach()
    return maps.numpy(), np.stack([s.labels for s in samples])


def test_agreement_is_the_spearman_of_profiles_recomputed_from_the_maps(
    study: tuple[Path, dict[str, pd.DataFrame], Any], recomputed: tuple[np.ndarray, np.ndarray]
) -> None:
    _, tables, _ = study
    maps, exact = recomputed
    agreement = tables["label_agreement"].set_index("level")
    eroded = np.stack([degradation("erode", k=2)(labels) for labels in exact])
    base = profile(study_scores(torch.from_numpy(maps), exact, "label"))
    moved = profile(study_scores(torch.from_numpy(maps), eroded, "label"))
    keep = np.isfinite(base) & np.isfinite(moved)
    expected = stats.spearmanr(base[keep], moved[keep]).statistic
    assert agreement.loc["erode_2", "spearman"] == pytest.approx(expected, abs=1e-6)
    assert agreement.loc["erode_2", "spearman_ci_low"] <= agreement.loc["erode_2", "spearman_ci_high"]
    # the exact labels against themselves: a perfect agreement, nothing lost, no class moved
    unchanged = agreement.loc["unchanged"]
    assert unchanged["spearman"] == pytest.approx(1.0) and unchanged["spearman_ci_low"] == pytest.approx(1.0)
    assert unchanged["lost"] == 0
    classes = tables["label_classes"]
    assert (classes.loc[classes["level"] == "unchanged", "change"] == 0.0).all()


def test_a_category_score_is_the_map_over_its_classes_pixels(
    study: tuple[Path, dict[str, pd.DataFrame], Any], recomputed: tuple[np.ndarray, np.ndarray]
) -> None:
    _, tables, _ = study
    maps, exact = recomputed
    categories = tables["label_categories"].set_index("category")
    flat = np.isin(exact, [c.id for c in CITYSCAPES.classes if c.category == "flat" and not c.ignore])
    per_image = [maps[i][flat[i]].sum() / flat[i].sum() for i in range(len(maps)) if flat[i].any()]
    assert categories.loc["flat", "score"] == pytest.approx(np.mean(per_image), rel=1e-5)
    road = [maps[i][exact[i] == 7].mean() for i in range(len(maps)) if (exact[i] == 7).any()]
    assert categories.loc["flat", "class_min"] <= np.mean(road) <= categories.loc["flat", "class_max"]


def test_unchanged_labels_change_no_verdict(study: tuple[Path, dict[str, pd.DataFrame], Any]) -> None:
    folder, tables, _ = study
    verdicts = tables["label_verdicts"]
    same = verdicts[verdicts["level"] == "unchanged"]
    trust = read_table(folder, TRUST)
    # one row per model × method of the trust table (nulls and controls included) × verdict column
    columns = [c for c in trust.columns if c == "verdict" or c.endswith("_verdict")]
    assert len(same) == len(trust) * len(columns)
    assert not same["changed"].any()
    assert set(verdicts["level"]) == {"unchanged", "erode_2", "pseudo_2"}
    # the run's own labels are the annotated (rendered) ones: the report gives no predicted-label warning
    report = (folder / REPORT).read_text()
    assert 'id="labels"' in report and "labels of this truth set are predicted" not in report


def test_the_threshold_is_read_off_the_agreement_curve(
    study: tuple[Path, dict[str, pd.DataFrame], Any],
) -> None:
    _, tables, _ = study
    agreement, thresholds = tables["label_agreement"], tables["label_thresholds"]
    row = thresholds.iloc[0]
    failing = agreement[agreement["spearman_ci_low"] < row["agreement"]]
    expected = failing["miou"].max() if len(failing) else np.nan
    assert row["miou_threshold"] == pytest.approx(expected, nan_ok=True)


def test_each_figure_draws_its_own_bootstrap_stream() -> None:
    # a level's intervals must not depend on the levels run before it
    first = figure_rng(0, "erode_2", "pilotnet", "gradcam").random(4)
    np.testing.assert_array_equal(first, figure_rng(0, "erode_2", "pilotnet", "gradcam").random(4))
    assert not np.array_equal(first, figure_rng(0, "erode_1", "pilotnet", "gradcam").random(4))
    assert not np.array_equal(first, figure_rng(1, "erode_2", "pilotnet", "gradcam").random(4))


def test_verdict_changes_compare_every_verdict_column() -> None:
    reference = pd.DataFrame(
        {"model": ["m"], "method": ["g"], "role": ["method"], "verdict": ["pass"], "causal_verdict": ["pass"]}
    )
    other = reference.assign(verdict="fail")
    rows = verdict_changes(reference, other, "erode_1").set_index("criterion")
    assert rows.loc["overall", "changed"] and not rows.loc["causal", "changed"]
    assert rows.loc["overall", "degraded"] == "fail" and rows.loc["overall", "exact"] == "pass"
