"""Verdicts: each check's figures taken against chance and the confounds, paired on the same images.

The rule, for one criterion of one check on one model (α = `ALPHA`, one-sided):

- Image counts are drawn once per model (a multinomial bootstrap over the model's evaluated images) and
  every method, control and null is scored on the same counts, so each comparison is paired: the bound
  is the α-quantile of (method − null) over the resamples, not two intervals side by side.
- The null explainers have roles (`gradsum.evaluation.base`): *chance* (random, uniform) and *confound*
  (class-area prior, positional prior) **gate**; the *heuristic* (Sobel edges) gets its own figure, "adds
  over an edge detector", and gates nothing. A criterion with a threshold (the value chance gives where
  no map can stand for it: concordance 0.5, lift 1, a normalised drop 0) is a further bar.
- **pass**: the lower bound of (method − null) is above 0 for every gating null, and the lower bound of
  (method − threshold) above 0.
- **fail**: the method is shown no better than chance: the upper bound of (method − a chance null), or
  of (method − threshold), is at or below 0.
- **inconclusive**: neither (including a gating null whose figure is undefined: it cannot be beaten, and
  a method whose own figure is undefined: it has no bound to show anything with).
- **uninformative**: a gating null itself passes the criterion on this model (judged by the same rule
  against the other gating nulls). The check then cannot tell an explainer from a prior there: every row
  of that model gets "uninformative" for the criterion, and nothing passes it.

Every row also carries its margin over the best gating null (the one with the best figure) with a paired
two-sided CI, so methods can be ranked where none passes. A criterion decided across models
(`over == MODELS`, the shortcut check) reads its permutation p over models: pass where p < α, fail where
p ≥ 0.5 (no stronger than a random pairing of models), inconclusive between.

The overall verdict of a row: fail if a criterion fails; pass if every informative criterion passes and
one of them is evidence of the causes; uninformative if no criterion that is evidence of the causes is
informative; inconclusive otherwise. A model's recommendation needs a pass on a criterion that is evidence of explaining the model's causes
(`Criterion.evidence`): a pass of the sanity check alone shows the map depends on the weights, not
that it points at what the model uses.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradsum.contract import CRITERIA, CRITERIA_PER_IMAGE, RECOMMENDATIONS, TRUST, TableSchema
from gradsum.evaluation.base import (
    CHANCE,
    GATING_ROLES,
    HEURISTIC,
    IMAGES,
    METHOD,
    NULL_ROLES,
    CheckResult,
    Criterion,
)
from gradsum.evaluation.erasure import OUT_OF_DOMAIN

PASS, FAIL, INCONCLUSIVE, UNINFORMATIVE = "pass", "fail", "inconclusive", "uninformative"
OUTCOMES = (PASS, FAIL, INCONCLUSIVE, UNINFORMATIVE)
#: The outcome of a criterion that did not run on a row (no figure for that model × method).
NOT_RUN = "not run"
#: One-sided level of every paired comparison; the two-sided intervals shown are at 1 − α (95 %).
ALPHA = 0.05
#: A permutation p over models at or above this is no stronger than a random pairing of the models.
NO_STRONGER_THAN_RANDOM = 0.5
#: `{key}_heuristic`: the paired comparison with the heuristic null (Sobel edges).
ADDS, ADDS_NOT, ADDS_UNCLEAR = "adds", "no", "unclear"
#: One plain sentence per outcome (the trust table's `{key}_reason` starts with it).
MEANINGS = {
    PASS: "better than chance and than every confound, paired on the same images",
    FAIL: "not better than chance",
    INCONCLUSIVE: "not shown better than every gating null, nor shown no better than chance",
    UNINFORMATIVE: "a null explainer passes this criterion on this model, so it cannot tell an explainer "
    "from a prior here",
    NOT_RUN: "the check did not run for this method",
}


@dataclass(frozen=True)
class Resampled:
    """One row's figure on one criterion: the point value and its value on every bootstrap resample."""

    point: float
    draws: np.ndarray

    @property
    def defined(self) -> bool:
        return math.isfinite(self.point) and bool(np.isfinite(self.draws).any())


@dataclass(frozen=True)
class Comparison:
    """(row − reference) in the better direction: the point and the one-sided α bounds."""

    point: float
    lower: float
    upper: float
    low: float
    high: float


def image_counts(images: Sequence[str], n_resamples: int, seed: int, model: str) -> np.ndarray:
    """(n_resamples, n_images) multinomial counts drawn once per model: every figure of the model reuses them."""
    rng = np.random.default_rng([seed, zlib.crc32(f"verdict\0{model}".encode())])
    n = len(images)
    if n == 0:
        return np.zeros((n_resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)


def _weighted_mean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per resample Σ count·value / Σ count over the images where the value is finite."""
    finite = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(finite, values, 0.0)) / (counts @ finite.astype(float))


def resample_figure(
    criterion: Criterion, rows: pd.DataFrame, images: Sequence[str], counts: np.ndarray
) -> Resampled:
    """The criterion's figure for one model × method from its per-image rows, on every resample.

    The figure is the mean over images of `criterion.column`, or mean(column) / mean(denominator) over the
    images where both are finite.
    """
    aligned = rows.set_index("image").reindex(list(images))
    values = aligned[criterion.column].to_numpy(float)
    ones = np.ones((1, len(images)))
    if criterion.denominator is None:
        point = _weighted_mean(ones, values)[0]
        return Resampled(float(point), _weighted_mean(counts, values))
    denominator = aligned[criterion.denominator].to_numpy(float)
    both = np.isfinite(values) & np.isfinite(denominator)
    values, denominator = np.where(both, values, np.nan), np.where(both, denominator, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = _ratio(_weighted_mean(ones, values), _weighted_mean(ones, denominator))[0]
        draws = _ratio(_weighted_mean(counts, values), _weighted_mean(counts, denominator))
    return Resampled(float(point), draws)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, undefined (NaN) where the denominator is not positive: a ratio figure's
    scale (an area, a ceiling − floor gap) that vanishes or turns over says nothing, and must not flip
    the figure's sign."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def compare(criterion: Criterion, row: Resampled, reference: Resampled | float) -> Comparison:
    """(row − reference), signed so that positive is better, with one-sided α and two-sided bounds."""
    sign = 1.0 if criterion.higher_is_better else -1.0
    if isinstance(reference, Resampled):
        point, draws = row.point - reference.point, row.draws - reference.draws
    else:
        point, draws = row.point - reference, row.draws - reference
    point, draws = sign * point, sign * draws
    finite = draws[np.isfinite(draws)]
    if not math.isfinite(point) or finite.size == 0:
        nan = math.nan
        return Comparison(nan, nan, nan, nan, nan)
    lower, upper, low, high = np.quantile(finite, [ALPHA, 1 - ALPHA, ALPHA / 2, 1 - ALPHA / 2])
    return Comparison(float(point), float(lower), float(upper), float(low), float(high))


def decide(
    criterion: Criterion,
    row: Resampled,
    gating: Mapping[str, tuple[str, Resampled]],
) -> tuple[str, str]:
    """(outcome, reason) of one row against the gating nulls (label → (role, figure)) and the threshold."""
    if not row.defined:
        return INCONCLUSIVE, "the figure is undefined on these images, so nothing is shown either way"
    bars: list[tuple[str, str, Comparison]] = []
    if criterion.threshold is not None:
        bars.append(("threshold", CHANCE, compare(criterion, row, criterion.threshold)))
    if criterion.against_nulls:
        bars += [(label, role, compare(criterion, row, figure)) for label, (role, figure) in gating.items()]
    for label, role, bar in bars:
        if role == CHANCE and math.isfinite(bar.upper) and bar.upper <= 0:
            return FAIL, f"not better than {_name(label, criterion)} (upper bound {bar.upper:+.3g})"
    if not bars:
        return INCONCLUSIVE, "nothing to compare with: no threshold and no other gating null"
    undefined = [label for label, _, bar in bars if not math.isfinite(bar.lower)]
    if undefined:
        return INCONCLUSIVE, f"{', '.join(undefined)}: figure undefined, so it cannot be beaten"
    short = [(label, bar) for label, _, bar in bars if bar.lower <= 0]
    if short:
        label, bar = min(short, key=lambda item: item[1].lower)
        return INCONCLUSIVE, f"not shown better than {_name(label, criterion)} (lower bound {bar.lower:+.3g})"
    return PASS, "beats " + ", ".join(_name(label, criterion) for label, _, _ in bars)


def _name(label: str, criterion: Criterion) -> str:
    return f"the threshold {criterion.threshold:g}" if label == "threshold" else label


def permutation_outcome(p: float) -> tuple[str, str]:
    """(outcome, reason) of a criterion decided across models by its one-sided permutation p."""
    if not math.isfinite(p):
        return FAIL, "undefined: the map is the same for every model"
    if p < ALPHA:
        return PASS, f"permutation p over models {p:.3g} < {ALPHA}"
    if p >= NO_STRONGER_THAN_RANDOM:
        return FAIL, f"permutation p over models {p:.3g}: no stronger than a random pairing of models"
    return INCONCLUSIVE, f"permutation p over models {p:.3g}"


def _number(record: Mapping[str, object], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, int | float | np.floating) else math.nan


def _criterion_columns(
    criterion: Criterion,
    figure: Resampled,
    outcome: str,
    reason: str,
    gating: Mapping[str, tuple[str, Resampled]],
    heuristic: Mapping[str, Resampled],
) -> dict[str, object]:
    """The trust-table columns of one criterion for one row: figure, margin, heuristic column, verdict."""
    key = criterion.key
    finite = figure.draws[np.isfinite(figure.draws)]
    low, high = (
        (float(v) for v in np.quantile(finite, [ALPHA / 2, 1 - ALPHA / 2]))
        if finite.size
        else (math.nan,) * 2
    )
    columns: dict[str, object] = {
        key: figure.point,
        f"{key}_ci_low": low,
        f"{key}_ci_high": high,
    }
    others = {label: f for label, (_, f) in gating.items() if f.defined}
    best = max(others, key=lambda label: compare(criterion, others[label], 0.0).point, default=None)
    margin = compare(criterion, figure, others[best]) if best is not None else Comparison(*(math.nan,) * 5)
    columns.update(
        {
            f"{key}_margin": margin.point,
            f"{key}_margin_ci_low": margin.low,
            f"{key}_margin_ci_high": margin.high,
            f"{key}_margin_null": best or "",
        }
    )
    over = next(iter(heuristic.values()), None)
    if over is not None and over.defined:
        edge = compare(criterion, figure, over)
        adds = ADDS if edge.lower > 0 else ADDS_NOT if edge.upper <= 0 else ADDS_UNCLEAR
        columns.update(
            {
                f"{key}_over_heuristic": edge.point,
                f"{key}_over_heuristic_ci_low": edge.low,
                f"{key}_over_heuristic_ci_high": edge.high,
                f"{key}_heuristic": adds,
            }
        )
    columns[f"{key}_verdict"] = outcome
    columns[f"{key}_reason"] = f"{MEANINGS[outcome]}: {reason}"
    return columns


def judge(
    criterion: Criterion, figures: Mapping[str, Resampled], roles: Mapping[str, str]
) -> dict[str, dict[str, object]]:
    """method → the criterion's trust-table columns (`_criterion_columns`), from every row's figure.

    `figures` must all be drawn on the same resamples (paired); `roles` maps labels to roles (missing: a
    method). Each row is decided against the other gating nulls; every row is uninformative when a gating
    null itself passes a criterion judged against the nulls.
    """
    gating = {m: (roles[m], f) for m, f in figures.items() if roles.get(m) in GATING_ROLES}
    heuristic = {m: f for m, f in figures.items() if roles.get(m) == HEURISTIC}
    decided = {}
    for method, figure in figures.items():
        others = {label: bar for label, bar in gating.items() if label != method}
        decided[method] = decide(criterion, figure, others)
    prior_passes = [m for m in gating if decided[m][0] == PASS]
    columns = {}
    for method, figure in figures.items():
        outcome, reason = decided[method]
        if prior_passes and criterion.against_nulls:
            outcome, reason = UNINFORMATIVE, f"{', '.join(prior_passes)} passes ({reason})"
        others = {label: bar for label, bar in gating.items() if label != method}
        columns[method] = _criterion_columns(criterion, figure, outcome, reason, others, heuristic)
    return columns


def criteria_per_image(results: Mapping[str, CheckResult], roles: Mapping[str, str]) -> pd.DataFrame:
    """`contract.CRITERIA_PER_IMAGE`: every per-image criterion's value (and denominator) per model ×
    method × image, the rows its verdicts are computed from (`judge_per_image`).

    `roles` maps method labels to roles (missing: a method). Rows are sorted, so the table does not depend
    on the order the checks or their shards produced them in.
    """
    frames = []
    for result in results.values():
        if result.per_image is None or result.per_image.empty:
            continue
        rows = result.per_image
        for criterion in (c for c in result.criteria if c.over == IMAGES):
            denominator = rows[criterion.denominator].to_numpy(float) if criterion.denominator else math.nan
            frames.append(
                pd.DataFrame(
                    {
                        "model": rows["model"].astype(str),
                        "method": rows["method"].astype(str),
                        "role": [roles.get(str(m), METHOD) for m in rows["method"]],
                        "criterion": criterion.key,
                        "image": rows["image"].astype(str),
                        "value": rows[criterion.column].to_numpy(float),
                        "denominator": denominator,
                    }
                )
            )
    if not frames:
        return _empty(CRITERIA_PER_IMAGE)
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["model", "method", "criterion", "image"], ignore_index=True)


def _empty(schema: TableSchema) -> pd.DataFrame:
    """`schema`'s table without rows, each column of its declared dtype."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in schema.columns})


def figures_of(
    criterion: Criterion, rows: pd.DataFrame, images: Sequence[str], counts: np.ndarray
) -> dict[str, Resampled]:
    """method → the criterion's figure (`resample_figure`) from `criteria_per_image` rows of one model
    and this criterion (columns method, image, value, denominator), methods in sorted order."""
    # the long table holds the criterion's column as `value` and its denominator as `denominator`
    long = dataclasses.replace(
        criterion, column="value", denominator="denominator" if criterion.denominator else None
    )
    return {
        str(method): resample_figure(long, group, images, counts)
        for method, group in rows.groupby("method", sort=True)
    }


def judge_per_image(
    criteria: Sequence[Criterion], per_image: pd.DataFrame, n_resamples: int = 1000, seed: int = 0
) -> dict[tuple[str, str], dict[str, object]]:
    """(model, method) → the columns (`judge`) of every per-image criterion, from `criteria_per_image`'s
    rows (roles from its `role` column).

    Image counts are drawn once per model over the sorted union of the images any criterion scored it on,
    so every criterion and every row of the model is paired on the same resamples.
    """
    rows: dict[tuple[str, str], dict[str, object]] = {}
    for model, frame in per_image.groupby("model", sort=True):
        images = sorted(frame["image"].unique())
        counts = image_counts(images, n_resamples, seed, str(model))
        roles = dict(zip(frame["method"], frame["role"], strict=True))
        for criterion in (c for c in criteria if c.over == IMAGES):
            scored = frame[frame["criterion"] == criterion.key]
            if scored.empty:
                continue
            judged = judge(criterion, figures_of(criterion, scored, images, counts), roles)
            for method, columns in judged.items():
                rows.setdefault((str(model), method), {}).update(columns)
    return rows


def criteria_frame(criteria: Sequence[Criterion]) -> pd.DataFrame:
    """`contract.CRITERIA`: one row per criterion, everything `criteria_from_frame` rebuilds it from."""
    if not criteria:
        return _empty(CRITERIA)
    return pd.DataFrame(
        [
            {
                "key": c.key,
                "check": c.check,
                "column": c.column,
                "denominator": c.denominator or "",
                "over": c.over,
                "text": c.text,
                "higher_is_better": c.higher_is_better,
                "against_nulls": c.against_nulls,
                "evidence": c.evidence,
                "threshold": math.nan if c.threshold is None else float(c.threshold),
            }
            for c in criteria
        ],
        columns=list(CRITERIA.names),
    )


def criteria_from_frame(frame: pd.DataFrame) -> list[Criterion]:
    """The criteria of a `contract.CRITERIA` table (as `contract.read_table` returns it), in its order.

    A criterion whose key is its check's name gets no separate `name` (its key is the same either way).
    """
    missing = [c for c in CRITERIA.names if c not in frame.columns]
    if missing:
        raise ValueError(f"criteria table: missing column(s) {', '.join(missing)}")
    criteria = []
    for record in frame.to_dict("records"):
        key, check = str(record["key"]), str(record["check"])
        threshold = _number(record, "threshold")
        criteria.append(
            Criterion(
                check=check,
                column=str(record["column"]),
                higher_is_better=bool(record["higher_is_better"]),
                threshold=threshold if math.isfinite(threshold) else None,
                text=_text(record, "text"),
                name="" if key == check else key,
                denominator=_text(record, "denominator") or None,
                against_nulls=bool(record["against_nulls"]),
                over=str(record["over"]),
                evidence=bool(record["evidence"]),
            )
        )
    return criteria


def _text(record: Mapping[str, object], key: str) -> str:
    """A text cell, "" where it is empty (a CSV reads an empty cell back as NaN)."""
    value = record.get(key)
    return value if isinstance(value, str) else ""


def criterion_table(
    results: Mapping[str, CheckResult], roles: Mapping[str, str], n_resamples: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """model, method and every criterion's columns (`_criterion_columns`), one row per model × method."""
    criteria = [c for r in results.values() for c in r.criteria]
    rows = judge_per_image(criteria, criteria_per_image(results, roles), n_resamples, seed)
    for result in results.values():
        for criterion in (c for c in result.criteria if c.over != IMAGES):
            _models_criterion(criterion, result, rows)
    return pd.DataFrame([{"model": m, "method": k, **v} for (m, k), v in sorted(rows.items())])


def _models_criterion(
    criterion: Criterion, result: CheckResult, rows: dict[tuple[str, str], dict[str, object]]
) -> None:
    key = criterion.key
    for record in result.summary.to_dict("records"):
        outcome, reason = permutation_outcome(_number(record, f"{criterion.column}_p"))
        rows.setdefault((str(record["model"]), str(record["method"])), {}).update(
            {
                key: _number(record, criterion.column),
                f"{key}_ci_low": _number(record, f"{criterion.column}_ci_low"),
                f"{key}_ci_high": _number(record, f"{criterion.column}_ci_high"),
                f"{key}_verdict": outcome,
                f"{key}_reason": f"{MEANINGS[outcome]}: {reason}",
            }
        )


def overall(outcomes: Sequence[str], evidence: Sequence[str] | None = None) -> str:
    """A row's verdict from its criteria's outcomes (see the module docstring).

    `evidence` are the outcomes of the criteria that are evidence of the causes (None: all of them): a
    row passes only with one of them passed, and is uninformative when none of them is informative.
    """
    evidence = outcomes if evidence is None else evidence
    ran = [o for o in outcomes if o != NOT_RUN]
    informative = [o for o in ran if o != UNINFORMATIVE]
    if FAIL in informative:
        return FAIL
    if not any(o not in (NOT_RUN, UNINFORMATIVE) for o in evidence):
        return UNINFORMATIVE if ran else NOT_RUN
    if all(o == PASS for o in informative) and PASS in evidence:
        return PASS
    return INCONCLUSIVE


def trust_table(
    results: Mapping[str, CheckResult],
    roles: Mapping[str, str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per model × method: every criterion's verdict, margin and sentence, then each check's figures.

    `roles` maps each method label to its role (`gradsum.evaluation.base.ROLES`; missing: a method).
    """
    summaries = [r.summary for r in results.values() if not r.summary.empty]
    criteria = [c for r in results.values() for c in r.criteria]
    if not summaries and not criteria:
        return pd.DataFrame(columns=list(TRUST.names))
    judged = criterion_table(results, roles, n_resamples, seed)
    merged = judged if not judged.empty else pd.DataFrame(columns=["model", "method"])
    for summary in summaries:
        # a check's own columns never overwrite the verdict's recomputed figures of the same name
        extra = [c for c in summary.columns if c in ("model", "method") or c not in merged.columns]
        merged = merged.merge(summary[extra], on=["model", "method"], how="outer")
    merged = merged.sort_values(["model", "method"], ignore_index=True)
    rows = []
    for record in merged.to_dict("records"):
        role = roles.get(str(record["method"]), METHOD)
        outcome = {c.key: _outcome(record, c) for c in criteria}
        rows.append(
            {
                "model": record["model"],
                "method": record["method"],
                "role": role,
                "null": role in NULL_ROLES,
                "verdict": overall(list(outcome.values()), [outcome[c.key] for c in criteria if c.evidence]),
                "failed": ", ".join(k for k, o in outcome.items() if o == FAIL),
                "summary": _summary(criteria, record, outcome),
                **{k: v for k, v in record.items() if k not in ("model", "method")},
                **{f"{k}_verdict": o for k, o in outcome.items()},
            }
        )
    return pd.DataFrame(rows)


def _outcome(record: Mapping[str, object], criterion: Criterion) -> str:
    value = record.get(f"{criterion.key}_verdict")
    return value if isinstance(value, str) and value in OUTCOMES else NOT_RUN


def _summary(criteria: Sequence[Criterion], row: Mapping[str, object], outcome: Mapping[str, str]) -> str:
    """A one-line verdict: each criterion's figure with its interval, its margin and its outcome."""
    parts = []
    if row.get("domain") == OUT_OF_DOMAIN:
        parts.append("causal erasure out-of-domain (filled, not re-rendered)")
    for criterion in criteria:
        key = criterion.key
        value, low, high = (_number(row, f"{key}{s}") for s in ("", "_ci_low", "_ci_high"))
        figure = "—" if not math.isfinite(value) else f"{value:.2f} [{low:.2f}, {high:.2f}]"
        margin = _number(row, f"{key}_margin")
        if math.isfinite(margin):
            lo, hi = _number(row, f"{key}_margin_ci_low"), _number(row, f"{key}_margin_ci_high")
            figure += f", margin {margin:+.2f} [{lo:+.2f}, {hi:+.2f}] over {row.get(f'{key}_margin_null')}"
        parts.append(f"{key} {figure}: {outcome[key]}")
    return "; ".join(parts)


def recommend(trust: pd.DataFrame, evidence: Sequence[str] | None = None) -> pd.DataFrame:
    """One line per model: the method to use (at least one `evidence` criterion passed, none failed; then
    most criteria passed, ties by the summed margin lower bounds), or that no method is shown better than
    chance and the confounds there.

    `evidence` are the criterion keys whose pass can carry a recommendation (`Criterion.evidence`;
    None: every criterion of the table). Controls and nulls are never recommended.
    """
    rows = []
    if trust.empty:
        return pd.DataFrame(columns=list(RECOMMENDATIONS.names))
    keys = [c[: -len("_verdict")] for c in trust.columns if c.endswith("_verdict")]
    evidence = keys if evidence is None else [k for k in keys if k in evidence]
    for model, group in trust.groupby("model", sort=True):
        methods = group[group["role"].astype(str) == METHOD]
        best, passed = _best(methods, keys, evidence)
        if best is None:
            sentence = (
                f"For {model}, no method is shown better than chance and the confounds here"
                + _best_margins(methods, keys)
            )
            rows.append({"model": model, "method": "", "passed": 0, "sentence": sentence})
            continue
        margins = _margins(best, keys)
        rows.append(
            {
                "model": model,
                "method": best["method"],
                "passed": passed,
                "sentence": f"For {model}, use {best['method']} (passes {', '.join(passed_keys(best, keys))}; "
                f"margins {margins})",
            }
        )
    return pd.DataFrame(rows, columns=list(RECOMMENDATIONS.names))


def passed_keys(row: Mapping[str, object], keys: Sequence[str]) -> list[str]:
    """The criteria `row` passes."""
    return [k for k in keys if row.get(f"{k}_verdict") == PASS]


def margin_floor(row: Mapping[str, object], keys: Sequence[str]) -> float:
    """The sum of a row's margin lower bounds over the criteria that have one (-inf where none has): how
    far every margin over the best gating null is sure to reach, the ranking where no method passes."""
    values = [_number(row, f"{k}_margin_ci_low") for k in keys]
    finite = [v for v in values if math.isfinite(v)]
    return float(sum(finite)) if finite else -math.inf


def _best(
    methods: pd.DataFrame, keys: Sequence[str], evidence: Sequence[str]
) -> tuple[dict[str, object] | None, int]:
    candidates = []
    for record in methods.to_dict("records"):
        if any(record.get(f"{k}_verdict") == FAIL for k in keys):
            continue
        passed = len(passed_keys(record, keys))
        if passed_keys(record, evidence):
            candidates.append((passed, margin_floor(record, keys), str(record["method"]), record))
    if not candidates:
        return None, 0
    passed, _, _, record = max(candidates, key=lambda c: (c[0], c[1], c[2]))
    return record, passed


def _margins(row: Mapping[str, object], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        margin = _number(row, f"{key}_margin")
        if math.isfinite(margin):
            low, high = _number(row, f"{key}_margin_ci_low"), _number(row, f"{key}_margin_ci_high")
            parts.append(f"{key} {margin:+.2f} [{low:+.2f}, {high:+.2f}]")
    return ", ".join(parts) if parts else "none measured"


def _best_margins(methods: pd.DataFrame, keys: Sequence[str]) -> str:
    """The closing "; closest: METHOD (margins ...)": of the methods that fail no criterion (else of all),
    the one with the highest summed margin lower bounds."""
    if methods.empty:
        return "."
    records = methods.to_dict("records")
    standing = [r for r in records if not any(r.get(f"{k}_verdict") == FAIL for k in keys)]
    records = standing or records
    closest = max(records, key=lambda r: (margin_floor(r, keys), str(r["method"])))
    return f"; closest: {closest['method']} (margins {_margins(closest, keys)})."


__all__ = [
    "ADDS",
    "ALPHA",
    "FAIL",
    "INCONCLUSIVE",
    "NO_STRONGER_THAN_RANDOM",
    "OUTCOMES",
    "PASS",
    "UNINFORMATIVE",
    "Resampled",
    "compare",
    "criteria_frame",
    "criteria_from_frame",
    "criteria_per_image",
    "decide",
    "figures_of",
    "image_counts",
    "judge",
    "judge_per_image",
    "margin_floor",
    "overall",
    "permutation_outcome",
    "recommend",
    "resample_figure",
    "trust_table",
]
