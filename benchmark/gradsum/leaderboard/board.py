"""One leaderboard table: a protocol model's rows (methods, controls, nulls) judged and ranked on figures
pooled over its training seeds.

Each training seed is one results folder (`<model>_s<seed>`), whose `criteria_per_image` table holds every
row's per-image value (and denominator) of every criterion. The pooled figures come from a hierarchical
paired bootstrap: each resample draws the training seeds with replacement (multinomial counts) and, within
each seed, image counts drawn once per seed and shared by every row and criterion (paired, as in
`gradsum.evaluation.verdicts`); a row's figure on a resample is the seed-count-weighted mean of its per-seed
figures, its point the plain mean of the per-seed points. Every interval therefore includes the variation
across training seeds, and each criterion's verdict is `verdicts.judge` on these figures.

Ranks: per criterion, the rows scored on it are ranked by figure in the better direction (1 best, ties at
their average rank, an undefined figure last); a row's score is the mean of its criterion ranks over the
criteria it was scored on (sanity scores no null or control: their maps do not depend on the weights), and
its rank is the rank of its score. The same ranking on every resample gives the rank's 95 % interval and the
share of resamples that keep the point rank. Kendall's W says how far the checks, and the training seeds,
agree on the methods' order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from gradsum.contract import CRITERIA_PER_IMAGE
from gradsum.errors import ResultsError
from gradsum.evaluation.base import GATING_ROLES, IMAGES, METHOD, Criterion
from gradsum.evaluation.controls import CAUSE_MASK, ORACLE
from gradsum.evaluation.verdicts import (
    ALPHA,
    NOT_RUN,
    Resampled,
    figures_of,
    image_counts,
    judge,
    overall,
)
from gradsum.names import CONTROL_SOURCE, qualified

#: The known-answer controls that must rank above every method (the mismatched controls need not).
KNOWN_ANSWERS = tuple(qualified(CONTROL_SOURCE, name) for name in (ORACLE, CAUSE_MASK))
#: Below this Kendall's W the raters (checks, seeds) are said to disagree, and each one's first is named.
AGREEMENT_FLOOR = 0.5
#: The headline when the known answers come out as they must.
EXPECTED_ORDER = "oracle rows at the top and null rows at the bottom"
#: Per criterion key, the row columns after the overall ones (`{key}_verdict`, ...).
CRITERION_FIELDS = ("verdict", "margin", "margin_ci_low", "margin_ci_high", "margin_null", "rank")
#: The row columns before the per-criterion ones.
ROW_FIELDS = ("rank", "rank_low", "rank_high", "rank_kept", "method", "role", "verdict")
#: The fields of `ROW_FIELDS` and of `CRITERION_FIELDS` that are text; every other one is a number.
ROW_TEXT, CRITERION_TEXT = ("method", "role", "verdict"), ("verdict", "margin_null")


@dataclass(frozen=True, eq=False)
class Board:
    """One protocol model's leaderboard table (see the module docstring for how each number is made).

    `rows` are ordered by rank: `ROW_FIELDS`, then per criterion key `{key}_{field}` for `CRITERION_FIELDS`.
    """

    model: str
    architecture: str
    task: str
    seeds: tuple[int, ...]
    criteria: tuple[str, ...]
    rows: pd.DataFrame
    kendall_w_checks: float
    kendall_w_seeds: float
    agreement: str
    headline: str


@dataclass(frozen=True)
class Draws:
    """One protocol model's resamples: the training seeds' counts, and per seed its images and their counts.

    `seed_counts` is (n_resamples, n_seeds) in `seeds` order; `image_counts[s]` is (n_resamples, n_images)
    over `images[s]`, drawn once per seed and shared by every row and criterion (paired).
    """

    seeds: tuple[int, ...]
    seed_counts: np.ndarray
    images: Mapping[int, list[str]]
    image_counts: Mapping[int, np.ndarray]


def draw(
    model: str, images: Mapping[int, Sequence[str]], names: Mapping[int, str], n_resamples: int, seed: int
) -> Draws:
    """The resamples of `model` over its training seeds (`images`: seed → its image ids).

    Each seed's image counts are `verdicts.image_counts` under `names[seed]` (the seed's results model
    name), so a board of one seed decides exactly as that results folder's trust table.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples: need at least 1, got {n_resamples}")
    seeds = tuple(sorted(images))
    rng = np.random.default_rng([seed, zlib.crc32(f"seeds\0{model}".encode())])
    n = len(seeds)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    ordered = {s: sorted(str(i) for i in images[s]) for s in seeds}
    per_seed = {s: image_counts(ordered[s], n_resamples, seed, names[s]) for s in seeds}
    return Draws(seeds, counts, ordered, per_seed)


def seed_figures(
    criterion: Criterion, per_seed: Mapping[int, pd.DataFrame], draws: Draws
) -> dict[str, list[Resampled]]:
    """row label → its figure on each training seed (`draws.seeds` order; undefined where it has no rows)."""
    found = {
        s: figures_of(criterion, per_seed[s], draws.images[s], draws.image_counts[s]) if s in per_seed else {}
        for s in draws.seeds
    }
    undefined = Resampled(math.nan, np.full(draws.seed_counts.shape[0], math.nan))
    methods = sorted({m for figures in found.values() for m in figures})
    return {m: [found[s].get(m, undefined) for s in draws.seeds] for m in methods}


def pool(figures: Sequence[Resampled], seed_counts: np.ndarray) -> Resampled:
    """Per-seed figures pooled: the point is the mean of the defined per-seed points; on each resample, the
    seed-count-weighted mean of the per-seed figures defined there."""
    points = np.array([f.point for f in figures], dtype=float)
    stacked = np.stack([f.draws for f in figures], axis=1)
    finite = np.isfinite(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (seed_counts * np.where(finite, stacked, 0.0)).sum(axis=1) / (seed_counts * finite).sum(
            axis=1
        )
    point = float(points[np.isfinite(points)].mean()) if np.isfinite(points).any() else math.nan
    return Resampled(point, pooled)


def pooled_figures(
    criterion: Criterion,
    per_seed: Mapping[int, pd.DataFrame],
    model: str,
    n_resamples: int,
    seed: int,
) -> dict[str, Resampled]:
    """row label → its figure pooled over the training seeds (hierarchical paired bootstrap).

    `per_seed`: training seed → that seed's `criteria_per_image` rows of one protocol model and one
    criterion. The image counts are drawn over each seed's own images.
    """
    frames = {s: _checked(frame, f"per_seed[{s}]") for s, frame in per_seed.items()}
    draws = draw(
        model, {s: f["image"].unique() for s, f in frames.items()}, _names(frames), n_resamples, seed
    )
    return {m: pool(f, draws.seed_counts) for m, f in seed_figures(criterion, frames, draws).items()}


def _checked(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in CRITERIA_PER_IMAGE.names if c not in frame.columns]
    if missing:
        raise ResultsError(f"{where}: missing column(s) {missing} of the {CRITERIA_PER_IMAGE.name} table")
    return frame.assign(image=frame["image"].astype(str), method=frame["method"].astype(str))


def _names(frames: Mapping[int, pd.DataFrame]) -> dict[int, str]:
    """seed → the results model name its rows carry (`<model>_s<seed>`: the trust table drew under it)."""
    names = {}
    for s, frame in frames.items():
        found = sorted({str(m) for m in frame["model"]})
        if len(found) != 1:
            raise ResultsError(f"per_seed[{s}]: need the rows of one model, got {found or 'none'}")
        names[s] = found[0]
    return names


def rank_rows(values: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Ranks along the last axis, 1 best: ties at their average rank, undefined (non-finite) values last."""
    values = np.asarray(values, dtype=float)
    better_first = -values if higher_is_better else values
    return np.asarray(rankdata(np.where(np.isfinite(values), better_first, np.inf), axis=-1), dtype=float)


def _score_ranks(criterion_ranks: np.ndarray) -> np.ndarray:
    """(criteria, ..., rows) criterion ranks (NaN: not scored) → the rank of each row's mean rank (1 best)."""
    scored = np.isfinite(criterion_ranks)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(scored, criterion_ranks, 0.0).sum(axis=0) / scored.sum(axis=0)
    return rank_rows(score, higher_is_better=False)


def _criterion_ranks(
    criteria: Sequence[Criterion], figures: Mapping[str, Mapping[str, np.ndarray]], rows: Sequence[str]
) -> np.ndarray:
    """(criteria, ..., rows): each criterion's ranks among the rows scored on it (NaN for the others).

    `figures[key][row]` is a point (shape ()) or draws (shape (n,)); every figure has the same shape.
    """
    shape = np.shape(next(iter(next(iter(figures.values())).values())))
    ranks = np.full((len(criteria), *shape, len(rows)), math.nan)
    for k, criterion in enumerate(criteria):
        scored = [j for j, row in enumerate(rows) if row in figures[criterion.key]]
        values = np.stack([np.asarray(figures[criterion.key][rows[j]], dtype=float) for j in scored], axis=-1)
        ranks[k][..., scored] = rank_rows(values, criterion.higher_is_better)
    return ranks


def kendalls_w(ranks: np.ndarray) -> float:
    """Kendall's coefficient of concordance of `ranks` (raters × items, each row a ranking with ties at their
    average rank), with the tie correction; NaN with fewer than two raters or items, or when every rater
    ties every item.

    W = 12 S / (m² (n³ − n) − m Σ T), S the squared deviations of the items' rank sums from their mean,
    T = Σ (t³ − t) over each rater's groups of t tied items (Kendall & Babington Smith, "The problem of m
    rankings").
    """
    ranks = np.asarray(ranks, dtype=float)
    if ranks.ndim != 2:
        raise ValueError(f"ranks: need a (raters, items) array, got shape {ranks.shape}")
    m, n = ranks.shape
    if m < 2 or n < 2:
        return math.nan
    expected = n * (n + 1) / 2
    bad = [i for i, row in enumerate(ranks) if not math.isclose(row.sum(), expected)]
    if bad:
        raise ValueError(
            f"ranks: rater(s) {bad} are not a ranking of {n} items (ranks summing to {expected:g})"
        )
    sums = ranks.sum(axis=0)
    spread = float(((sums - sums.mean()) ** 2).sum())
    ties = sum(
        float((counts**3 - counts).sum())
        for counts in (np.unique(row, return_counts=True)[1] for row in ranks)
    )
    denominator = m * m * (n**3 - n) - m * ties
    return 12.0 * spread / denominator if denominator > 0 else math.nan


def build_board(
    model: str,
    architecture: str,
    task: str,
    per_seed: Mapping[int, pd.DataFrame],
    criteria: Sequence[Criterion],
    roles: Mapping[str, str],
    n_resamples: int,
    seed: int,
) -> Board:
    """The leaderboard table of one protocol model from each training seed's `criteria_per_image` rows.

    `per_seed`: training seed → that seed's rows of every criterion (the `criterion` column names the
    `Criterion.key`). The board's criteria are those of `criteria` decided over images that have rows
    (a criterion decided across models has no per-image figure to pool). `roles`: label → role (missing:
    a method). Deterministic given `seed`.
    """
    if not per_seed:
        raise ResultsError(f"per_seed: no training seed's rows for model {model}")
    frames = {s: _checked(frame, f"per_seed[{s}]") for s, frame in per_seed.items()}
    keys_found = {str(k) for frame in frames.values() for k in frame["criterion"]}
    judged = [c for c in criteria if c.over == IMAGES and c.key in keys_found]
    if not judged:
        images = sorted(c.key for c in criteria if c.over == IMAGES)
        raise ResultsError(
            f"per_seed: model {model} has no rows of any criterion decided over images {images}"
        )
    draws = draw(
        model, {s: f["image"].unique() for s, f in frames.items()}, _names(frames), n_resamples, seed
    )
    per_criterion = {
        c.key: seed_figures(c, {s: f[f["criterion"].astype(str) == c.key] for s, f in frames.items()}, draws)
        for c in judged
    }
    pooled = {
        key: {m: pool(f, draws.seed_counts) for m, f in found.items()} for key, found in per_criterion.items()
    }
    rows = sorted({m for found in pooled.values() for m in found})
    role = {m: roles.get(m, METHOD) for m in rows}
    points = {key: {m: np.asarray(f.point) for m, f in found.items()} for key, found in pooled.items()}
    point_ranks = _criterion_ranks(judged, points, rows)
    rank = _score_ranks(point_ranks)
    resamples = {key: {m: f.draws for m, f in found.items()} for key, found in pooled.items()}
    resampled = _score_ranks(_criterion_ranks(judged, resamples, rows))
    columns = {c.key: judge(c, pooled[c.key], roles) for c in judged}
    records = [
        {
            "rank": rank[j],
            "rank_low": float(np.quantile(resampled[:, j], ALPHA / 2, method="lower")),
            "rank_high": float(np.quantile(resampled[:, j], 1 - ALPHA / 2, method="higher")),
            "rank_kept": float(np.mean(resampled[:, j] == rank[j])),
            "method": method,
            "role": role[method],
            **_criterion_record(judged, columns, method, point_ranks[:, j]),
        }
        for j, method in enumerate(rows)
    ]
    table = pd.DataFrame(records, columns=board_columns([c.key for c in judged]))
    table = table.sort_values(["rank", "method"], kind="stable", ignore_index=True)

    methods = [j for j, m in enumerate(rows) if role[m] == METHOD]
    w_checks, firsts_checks = _checks_agreement(judged, pooled, rows, methods)
    w_seeds, firsts_seeds = _seeds_agreement(judged, per_criterion, draws.seeds, rows, methods)
    return Board(
        model=model,
        architecture=architecture,
        task=task,
        seeds=draws.seeds,
        criteria=tuple(c.key for c in judged),
        rows=table,
        kendall_w_checks=w_checks,
        kendall_w_seeds=w_seeds,
        agreement=agreement(w_checks, firsts_checks, w_seeds, firsts_seeds),
        headline=headline(table),
    )


def _criterion_record(
    judged: Sequence[Criterion],
    columns: Mapping[str, Mapping[str, Mapping[str, object]]],
    method: str,
    ranks: np.ndarray,
) -> dict[str, object]:
    """One row's overall verdict and, per criterion, its `CRITERION_FIELDS` (NOT_RUN where not scored)."""
    record: dict[str, object] = {}
    for criterion, rank in zip(judged, ranks, strict=True):
        key = criterion.key
        found = columns[key].get(method, {})
        # the verdict and the rank are set below: NOT_RUN where the row was not scored, the board's own rank
        for field in CRITERION_FIELDS:
            value = found.get(f"{key}_{field}")
            if field in CRITERION_TEXT:
                record[f"{key}_{field}"] = str(value) if value is not None else ""
            else:
                record[f"{key}_{field}"] = float(value) if isinstance(value, float | int) else math.nan
        record[f"{key}_verdict"] = str(found.get(f"{key}_verdict", NOT_RUN))
        record[f"{key}_rank"] = float(rank)
    outcomes = [str(record[f"{c.key}_verdict"]) for c in judged]
    evidence = [str(record[f"{c.key}_verdict"]) for c in judged if c.evidence]
    return {"verdict": overall(outcomes, evidence), **record}


def board_columns(keys: Sequence[str]) -> list[str]:
    """A board's row columns for the criterion keys `keys`, in order."""
    return [*ROW_FIELDS, *(f"{key}_{field}" for key in keys for field in CRITERION_FIELDS)]


def _firsts(ranks: np.ndarray, labels: Sequence[str]) -> str:
    """The label(s) ranked first in `ranks` (ties joined by "and")."""
    best = np.nanmin(ranks)
    return " and ".join(label for label, r in zip(labels, ranks, strict=True) if r == best)


def _checks_agreement(
    judged: Sequence[Criterion],
    pooled: Mapping[str, Mapping[str, Resampled]],
    rows: Sequence[str],
    methods: Sequence[int],
) -> tuple[float, dict[str, str]]:
    """Kendall's W of the checks over the method rows (point figures), and each check's first method."""
    labels = [rows[j] for j in methods]
    if not judged or not labels:
        return math.nan, {}
    points = {
        key: {m: np.asarray(f.point) for m, f in found.items() if m in labels}
        for key, found in pooled.items()
    }
    ranks = _criterion_ranks(judged, points, labels)
    # a method a criterion did not score ranks last there, so every rater ranks every method
    ranks = np.where(np.isfinite(ranks), ranks, math.inf)
    ranks = np.stack([rank_rows(r, higher_is_better=False) for r in ranks])
    firsts = {c.key: _firsts(r, labels) for c, r in zip(judged, ranks, strict=True)}
    return kendalls_w(ranks), firsts


def _seeds_agreement(
    judged: Sequence[Criterion],
    per_criterion: Mapping[str, Mapping[str, Sequence[Resampled]]],
    seeds: Sequence[int],
    rows: Sequence[str],
    methods: Sequence[int],
) -> tuple[float, dict[str, str]]:
    """Kendall's W of the training seeds over the method rows (each seed's own point score), and each
    seed's first method."""
    labels = [rows[j] for j in methods]
    if not judged or not labels:
        return math.nan, {}
    ranks = []
    for position in range(len(seeds)):
        points = {
            key: {m: np.asarray(f[position].point) for m, f in found.items()}
            for key, found in per_criterion.items()
        }
        rank = _score_ranks(_criterion_ranks(judged, points, rows))
        ranks.append(rank_rows(rank[list(methods)], higher_is_better=False))
    firsts = {f"seed {s}": _firsts(r, labels) for s, r in zip(seeds, ranks, strict=True)}
    return kendalls_w(np.stack(ranks)), firsts


def _agreement_of(what: str, w: float, raters: int, firsts: Mapping[str, str]) -> str:
    if not math.isfinite(w):
        return (
            f"Kendall's W over the {what} is undefined (it needs two or more {what} and two or more methods)"
        )
    if w >= AGREEMENT_FLOOR:
        return f"the {what} agree on the methods' order (Kendall's W {w:.2f} over {raters} {what})"
    named = ", ".join(f"{rater} ranks {first} first" for rater, first in firsts.items())
    return f"the {what} disagree on the methods' order (Kendall's W {w:.2f} over {raters} {what}): {named}"


def agreement(
    w_checks: float, firsts_checks: Mapping[str, str], w_seeds: float, firsts_seeds: Mapping[str, str]
) -> str:
    """One sentence on how far the checks and the training seeds agree; where they disagree (W below
    `AGREEMENT_FLOOR`) it names which method each ranks first instead of averaging it away."""
    checks = _agreement_of("checks", w_checks, len(firsts_checks), firsts_checks)
    seeds = _agreement_of("training seeds", w_seeds, len(firsts_seeds), firsts_seeds)
    return f"{checks[0].upper()}{checks[1:]}; {seeds}."


def headline(rows: pd.DataFrame) -> str:
    """`EXPECTED_ORDER` when every known-answer control on the board ranks above every method and every
    gating null below every method; else the finding, naming the rows that break it."""
    records = rows.to_dict("records")
    methods = [r for r in records if r["role"] == METHOD]
    if not methods:
        return "no method on this board to rank against the controls and nulls"
    best = min(methods, key=lambda r: r["rank"])
    worst = max(methods, key=lambda r: r["rank"])
    broken = [
        f"{r['method']} (rank {r['rank']:g}) does not rank above {best['method']} (rank {best['rank']:g})"
        for r in records
        if r["method"] in KNOWN_ANSWERS and not r["rank"] < best["rank"]
    ]
    broken += [
        f"{r['method']} (rank {r['rank']:g}) does not rank below {worst['method']} (rank {worst['rank']:g})"
        for r in records
        if r["role"] in GATING_ROLES and not r["rank"] > worst["rank"]
    ]
    if broken:
        return "not the expected order: " + "; ".join(broken)
    if not any(r["method"] in KNOWN_ANSWERS for r in records):
        return "null rows at the bottom; no known-answer control on this board"
    return EXPECTED_ORDER


__all__ = [
    "AGREEMENT_FLOOR",
    "CRITERION_FIELDS",
    "CRITERION_TEXT",
    "EXPECTED_ORDER",
    "KNOWN_ANSWERS",
    "ROW_FIELDS",
    "ROW_TEXT",
    "Board",
    "Draws",
    "board_columns",
    "build_board",
    "draw",
    "kendalls_w",
    "pool",
    "pooled_figures",
    "rank_rows",
]
