"""Does each method find the planted shortcut? Its mass share on the cue class (sky) should rise with the
measured pull across models (`shortcut_detection`: Spearman over models, an image-bootstrap CI and a
permutation p), and a model's cue mass should exceed that of its series' fair (rho 0) model (`detected`,
paired per image; `shortcut_onset`: the smallest rho where it does)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns, mean_ci
from gradsum.evaluation.agreement import rank_correlations
from gradsum.evaluation.checks.shortcut.options import ShortcutOptions
from gradsum.evaluation.checks.shortcut.series import SeriesMember, fair_models
from gradsum.evaluation.checks.shortcut.tables import (
    CONFIDENCE,
    DETECTION_COLUMNS,
    DETECTION_CRITERION,
    IMAGE_SHARE_COLUMNS,
    METHOD_COLUMNS,
    METHODS_TABLE,
    ONSET_COLUMNS,
    SUMMARY_COLUMNS,
    TINT_EFFECT_COLUMNS,
    ci_columns,
    figure_rng,
    number,
    percentile_interval,
)
from gradsum.evaluation.verdicts import OUTCOMES, overall, permutation_outcome

#: Pairings drawn for the permutation p-value; with up to 7 models every pairing is enumerated (exact).
PERMUTATIONS = 9999
#: The trust table's column holding the shortcut criterion's outcome per model × method.
VERDICT_COLUMN = f"{DETECTION_CRITERION.key}_verdict"


def image_shares(rows: pd.DataFrame, options: ShortcutOptions) -> pd.DataFrame:
    """Per model × method × image of GradSUM per-image rows: the mass shares on the cue and on the
    foreground classes (0 where absent, NaN for an all-zero map) and the cue's score (NaN where absent)."""
    check_columns(rows, PER_IMAGE_COLUMNS, "gradsum rows")
    cue = rows["class"] == options.cue
    foreground = rows["class"].isin(list(options.foreground))
    # 0·share keeps an all-zero map's NaN shares NaN where the class is absent
    nothing = 0.0 * rows["mass_share"]
    parts = pd.DataFrame(
        {
            "model": rows["model"],
            "method": rows["method"],
            "image": rows["image"],
            "cue_mass_share": rows["mass_share"].where(cue, nothing),
            "foreground_mass_share": rows["mass_share"].where(foreground, nothing),
            "cue_score": rows["score"].where(cue),
        }
    )
    shares = parts.groupby(["model", "method", "image"], sort=True).sum(min_count=1).reset_index()
    return shares[list(IMAGE_SHARE_COLUMNS)]


def _paired_difference(shares: pd.DataFrame, model: str, fair: str | None, method: str) -> np.ndarray:
    """Per image shared with the fair model: cue mass share of `model` minus the fair model's."""
    if fair is None or fair == model:
        return np.array([], dtype=float)
    method_rows = shares[shares["method"] == method]
    own = method_rows[method_rows["model"] == model].set_index("image")["cue_mass_share"]
    reference = method_rows[method_rows["model"] == fair].set_index("image")["cue_mass_share"]
    common = own.index.intersection(reference.index)
    return (own[common] - reference[common]).to_numpy(float)


def method_table(
    shares: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    nulls: Mapping[str, bool],
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_methods`: per steering model × method, its cue and foreground mass, and the paired cue
    mass difference against the series' fair model (`detected` when that interval lies above 0)."""
    check_columns(shares, IMAGE_SHARE_COLUMNS, "image shares")
    fairs = fair_models(described)
    rows = []
    for (model, method), group in shares.groupby(["model", "method"], sort=True):
        if model not in described:
            continue
        info = described[str(model)]
        row: dict[str, object] = {
            "model": model,
            "method": method,
            "null": nulls.get(str(method), False),
            "series": info.series,
            "rho": info.rho,
            "finetuned": info.finetuned,
        }
        values = {
            figure: group[figure].to_numpy(float)
            for figure in ("cue_score", "cue_mass_share", "foreground_mass_share")
        }
        values["mass_diff_vs_fair"] = _paired_difference(shares, str(model), fairs[info.series], str(method))
        for figure, figure_values in values.items():
            rng = figure_rng(seed, str(model), str(method), figure)
            row.update(
                dict(
                    zip(ci_columns(figure), mean_ci(figure_values, rng, n_resamples, CONFIDENCE), strict=True)
                )
            )
        low = number(row["mass_diff_vs_fair_ci_low"])
        row["detected"] = bool(math.isfinite(low) and low > 0)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(METHOD_COLUMNS))


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman of two per-model vectors; NaN for fewer than 3 models or a constant vector."""
    if x.size < 3:
        return math.nan
    return float(rank_correlations(x, y)[0])


def _detection_row(
    method: str,
    null: bool,
    mass: pd.DataFrame,
    pull: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    n_resamples: int,
    seed: int,
) -> dict[str, object]:
    """One method's detection figures from images × models matrices of cue mass share and pull."""
    models = [str(m) for m in mass.columns if m in pull.columns]
    images = mass.index.intersection(pull.index)
    mass_values = mass.loc[images, models].to_numpy(float)
    pull_values = pull.loc[images, models].to_numpy(float)
    # the resamples draw whole images, so every model's mass and pull come from the same images
    kept = np.isfinite(mass_values).all(axis=1) & np.isfinite(pull_values).all(axis=1)
    mass_values, pull_values = mass_values[kept], pull_values[kept]
    row: dict[str, object] = {"method": method, "null": null, "n_models": len(models)}
    row.update(dict.fromkeys(DETECTION_COLUMNS[3:], math.nan))
    if not kept.any():
        return row
    mass_means, pull_means = mass_values.mean(axis=0), pull_values.mean(axis=0)
    trained = [
        i for i, m in enumerate(models) if not described[m].finetuned and math.isfinite(described[m].rho)
    ]
    rhos = np.array([described[models[i]].rho for i in trained], dtype=float)
    row["spearman_vs_rho"] = _rank_correlation(mass_means[trained], rhos)
    spearman = _rank_correlation(mass_means, pull_means)
    if not math.isfinite(spearman):
        return row
    n_images = mass_values.shape[0]
    counts = figure_rng(seed, method, "detection").multinomial(
        n_images, np.full(n_images, 1.0 / n_images), size=n_resamples
    )
    resampled = rank_correlations((counts @ mass_values) / n_images, (counts @ pull_values) / n_images)[0]
    row["spearman"] = spearman
    row["spearman_ci_low"], row["spearman_ci_high"] = percentile_interval(
        spearman, np.asarray(resampled, dtype=float)
    )
    row["p_value"] = permutation_p_value(mass_means, pull_means, figure_rng(seed, method, "permutation"))
    return row


def permutation_p_value(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """One-sided (greater) permutation p-value of Spearman ρ over re-pairings of the models.

    A handful of models is the usual case here, where the t approximation scipy's `spearmanr` uses is
    far off (4 models in perfect order: p 0 instead of the exact 1/24).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties, which its ranks handle
        result = stats.permutation_test(
            (x, y),
            lambda a, b: stats.spearmanr(a, b).statistic,
            permutation_type="pairings",
            alternative="greater",
            n_resamples=PERMUTATIONS,
            rng=rng,
        )
    return float(result.pvalue)


def detection_table(
    shares: pd.DataFrame,
    effects: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    nulls: Mapping[str, bool],
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_detection`: per method, Spearman over the steering models it ran on between the mean
    cue mass share and the measured pull (fine-tuned models included), with an image-bootstrap CI and a
    one-sided p-value; and Spearman against rho over the models trained from scratch."""
    check_columns(shares, IMAGE_SHARE_COLUMNS, "image shares")
    check_columns(effects, TINT_EFFECT_COLUMNS, "tint effects")
    pull = effects[effects["model"].isin(list(described))].pivot_table(
        index="image", columns="model", values="pull", aggfunc="mean"
    )
    rows = []
    for method, group in shares[shares["model"].isin(list(described))].groupby("method", sort=True):
        mass = group.pivot_table(index="image", columns="model", values="cue_mass_share", aggfunc="mean")
        rows.append(
            _detection_row(
                str(method), nulls.get(str(method), False), mass, pull, described, n_resamples, seed
            )
        )
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def _rho_text(rho: float) -> str:
    return format(rho, "g")


def onset_table(methods: pd.DataFrame) -> pd.DataFrame:
    """`shortcut_onset`: per method × series, the smallest rho > 0 at which a model trained from scratch
    has its cue mass detected above the fair model's, and every such rho."""
    check_columns(methods, METHOD_COLUMNS, METHODS_TABLE)
    rows = []
    for (method, series), group in methods.groupby(["method", "series"], sort=True):
        hits = group[~group["finetuned"].astype(bool) & (group["rho"] > 0) & group["detected"].astype(bool)]
        rhos = sorted(set(hits["rho"].astype(float)))
        rows.append(
            {
                "method": method,
                "null": bool(group["null"].iloc[0]),
                "series": series,
                "first_rho": rhos[0] if rhos else math.nan,
                "rhos_detected": ",".join(_rho_text(rho) for rho in rhos),
            }
        )
    return pd.DataFrame(rows, columns=list(ONSET_COLUMNS))


def summary_table(methods: pd.DataFrame, detection: pd.DataFrame) -> pd.DataFrame:
    """Per steering model × method: the method's detection Spearman and interval, as verdicts read it."""
    names = [*ci_columns("spearman"), "p_value"]
    figures = detection.rename(columns=dict(zip(names, SUMMARY_COLUMNS[2:], strict=True)))
    merged = methods[["model", "method"]].merge(figures, on="method", how="left")
    return merged[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def detection_outcomes(detection: pd.DataFrame, trust: pd.DataFrame | None) -> tuple[dict[str, str], bool]:
    """Each detection method's outcome (pass, fail, inconclusive, uninformative) and whether it came from
    the trust table.

    The trust table's `shortcut_verdict` decides the criterion by the permutation p over models; every
    model row of a method repeats it, so a method's rows are combined as a row's criteria are (`overall`:
    a fail wins). Without that column, or for a method it does not judge, the detection table's own
    permutation p is read by the same rule (`permutation_outcome`).
    """
    methods = list(detection["method"].astype(str))
    own = {m: permutation_outcome(float(p))[0] for m, p in zip(methods, detection["p_value"], strict=True)}
    if trust is None or VERDICT_COLUMN not in trust.columns:
        return own, False
    judged = trust[trust[VERDICT_COLUMN].isin(OUTCOMES)]
    if judged.empty:
        return own, False
    outcomes = judged.groupby(judged["method"].astype(str))[VERDICT_COLUMN].agg(lambda v: overall(list(v)))
    return {m: str(outcomes[m]) if m in outcomes.index else own[m] for m in methods}, True
