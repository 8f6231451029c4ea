"""The causal check: each method's class masses against the causal referee (`gradsum.evaluation.referee`),
which erases one class from an image and measures how much each model's output moves. A class is material for a model when its erasure moves
the output more than its placebo by a margin fixed in advance (`materiality`).

The `causal` check scores each method per image against that referee in like units (`concordance`):
whether the method's class masses order the classes as their erasure effects do, and how much of its
mass lies on the material classes against their area (the lift). The old Spearman of class densities
against effects (`agreement`) is kept as a secondary column, `density_spearman`, for one release.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradsum.aggregation.profiles import check_columns, mean_ci
from gradsum.evaluation.agreement import AGREEMENT_COLUMNS, agreement_table
from gradsum.evaluation.base import (
    CheckResult,
    Criterion,
    EvaluationContext,
    TrustCheck,
    check_table,
    register_check,
)
from gradsum.evaluation.concordance import causal_figures, causal_per_image
from gradsum.evaluation.erasure import DEFAULT_FILLER, ERASERS
from gradsum.evaluation.materiality import (
    MATERIALITY,
    MATERIALITY_COLUMNS,
    material_classes,
    materiality_margins,
    materiality_table,
)
from gradsum.evaluation.referee import CAUSAL_EFFECT_COLUMNS, cached_causal_effects, gradsum_rows

#: Columns of `causal_profiles.csv`: one row per model × class × effect.
CAUSAL_PROFILE_COLUMNS = (
    "model",
    "task",
    "class",
    "class_id",
    "effect",
    "mean",
    "ci_low",
    "ci_high",
    "n_images",
    "domain",
)
#: Profile effect → the effect column it averages (the flip rate is the mean of the 0/1 flips).
PROFILE_EFFECTS = {"abs_delta": "abs_delta", "delta": "delta", "flip_rate": "flip"}
#: Columns of the check's summary (the trust table's causal columns), in order. `density_spearman` (and
#: its CI) is the old agreement figure, secondary for one release: it decides no verdict.
SUMMARY_COLUMNS = (
    "model",
    "method",
    "concordance",
    "image_concordance",
    "causal_lift",
    "n_material",
    "material_classes",
    "density_spearman",
    "density_spearman_ci_low",
    "density_spearman_ci_high",
    "domain",
)


def causal_profiles(effects: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Model × class × effect means over images with percentile bootstrap CIs (`PROFILE_EFFECTS`).

    A task without decisions (steering) has no flip rate, so it gets no `flip_rate` rows.
    """
    check_columns(effects, CAUSAL_EFFECT_COLUMNS, "causal effects")
    rows = []
    keys = ["model", "task", "domain", "class_id"]
    for (model, task, domain, class_id), group in effects.groupby(keys, sort=True):
        for effect, column in PROFILE_EFFECTS.items():
            values = group[column].to_numpy(float)
            if not np.isfinite(values).any():
                continue
            key = f"{model}\0{class_id}\0{effect}"
            rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
            mean, low, high = mean_ci(values, rng, n_resamples)
            rows.append(
                {
                    "model": model,
                    "task": task,
                    "class": group["class"].iloc[0],
                    "class_id": int(class_id),
                    "effect": effect,
                    "mean": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "n_images": int(group["image"].nunique()),
                    "domain": domain,
                }
            )
    return pd.DataFrame(rows, columns=list(CAUSAL_PROFILE_COLUMNS))


#: Primary criterion: per-image pair concordance of class masses with the referee's material effects.
CONCORDANCE_CRITERION = Criterion(
    "causal",
    "concordance",
    higher_is_better=True,
    threshold=0.5,
    name="causal",
    text="per image, over the class pairs whose erasure effects the referee separates by more than the "
    "task's margin (immaterial classes tied at 0), the fraction the method's class masses order the same "
    "way (ties 0.5, chance 0.5), averaged over images",
)
#: Image criterion: does the map follow the referee from image to image (a class ranking that ignores the
#: image, like an oracle built for another image, scores chance)?
IMAGE_CRITERION = Criterion(
    "causal",
    "image_concordance",
    higher_is_better=True,
    threshold=0.5,
    name="causal_image",
    text="per image, over (material class, other image) pairs whose erasure effects differ by more than "
    "the task's margin, the fraction the method's mass shares order the two images as the referee's effect "
    "shares do (ties 0.5, chance 0.5), averaged over images",
)
#: Companion criterion: the mass on the material classes against their area (the uniform map's is 1).
LIFT_CRITERION = Criterion(
    "causal",
    "material_mass",
    higher_is_better=True,
    threshold=1.0,
    name="causal_lift",
    denominator="material_area",
    text="mean over images of the map's mass share on the model's material classes divided by the mean "
    "of their area share (1: no more mass than area, the uniform map)",
)


@dataclass(frozen=True)
class CausalOptions:
    """The check's options (run config `evaluation.options.causal`)."""

    #: the `ERASERS` entry used where the truth set cannot re-render
    filler: str = DEFAULT_FILLER
    #: task → materiality margin (`materiality.MATERIALITY`, overridden per task)
    materiality: Mapping[str, float] = field(default_factory=lambda: dict(MATERIALITY))

    def __post_init__(self) -> None:
        ERASERS.get(self.filler, "evaluation.options.causal.filler")
        object.__setattr__(self, "materiality", materiality_margins(self.materiality))


#: The check's tables: the referee's effects, their profiles, the material classes, the secondary agreement.
CAUSAL_EFFECTS_TABLE = check_table("causal_effects", CAUSAL_EFFECT_COLUMNS, ints=("class_id", "pixels"))
CAUSAL_PROFILES_TABLE = check_table(
    "causal_profiles", CAUSAL_PROFILE_COLUMNS, text=("effect",), ints=("class_id", "n_images")
)
MATERIALITY_TABLE = check_table(
    "causal_materiality", MATERIALITY_COLUMNS, ints=("n_images",), bools=("material",)
)
AGREEMENT_TABLE = check_table(
    "agreement", AGREEMENT_COLUMNS, text=("causal_classes", "cause_source"), ints=("n_images", "n_classes")
)


@register_check("causal")
class CausalCheck(TrustCheck):
    """Causal erasure profiles, the referee's material classes, and each method's concordance with them."""

    Options = CausalOptions
    tables = (CAUSAL_EFFECTS_TABLE, CAUSAL_PROFILES_TABLE, MATERIALITY_TABLE, AGREEMENT_TABLE)
    description = (
        "erase and re-texture each class, call classes material by a fixed margin, and score each "
        "method's class masses per image against the erasure effects"
    )

    def evaluate(self, context: EvaluationContext, options: CausalOptions) -> CheckResult:
        """Tables causal_effects, causal_profiles, causal_materiality, agreement (secondary); per-image
        concordance and material shares; summary per model × method (`SUMMARY_COLUMNS`)."""
        effects = cached_causal_effects(context, options.filler)
        materiality = materiality_table(effects, options.materiality, context.n_resamples, context.seed)
        material = material_classes(materiality)
        rows = gradsum_rows(context)
        per_image = causal_per_image(rows, effects, material, options.materiality)
        agreement = agreement_table(rows, effects, context.truthset.causes, context.n_resamples, context.seed)
        return CheckResult(
            tables={
                CAUSAL_EFFECTS_TABLE.name: effects,
                CAUSAL_PROFILES_TABLE.name: causal_profiles(effects, context.n_resamples, context.seed),
                MATERIALITY_TABLE.name: materiality,
                AGREEMENT_TABLE.name: agreement,
            },
            summary=_summary(causal_figures(per_image, material), agreement),
            criteria=[CONCORDANCE_CRITERION, IMAGE_CRITERION, LIFT_CRITERION],
            per_image=per_image,
        )


def _summary(figures: pd.DataFrame, agreement: pd.DataFrame) -> pd.DataFrame:
    """The concordance figures beside the secondary density Spearman and the erasure domain."""
    density = agreement.rename(
        columns={
            "spearman": "density_spearman",
            "spearman_ci_low": "density_spearman_ci_low",
            "spearman_ci_high": "density_spearman_ci_high",
        }
    )
    columns = ["model", "method", "density_spearman", "density_spearman_ci_low", "density_spearman_ci_high"]
    merged = figures.merge(density[[*columns, "domain"]], on=["model", "method"], how="outer")
    return merged.sort_values(["model", "method"], ignore_index=True)[list(SUMMARY_COLUMNS)]
