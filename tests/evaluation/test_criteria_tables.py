"""What the verdicts are computed from, written down: the criteria table and the per-image figures.

The trust table's verdicts, margins and intervals must follow from the two tables alone, read back from
disk: a leaderboard pools them over training seeds without rerunning a check. The per-image rows are
checked by hand, the criteria by a round trip, and the recomputation against the trust table written
beside them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradsum.contract import (
    CRITERIA,
    CRITERIA_PER_IMAGE,
    TRUST,
    VERDICT_TABLES,
    read_table,
    table_schema,
    write_table,
)
from gradsum.evaluation.base import (
    CHANCE,
    CONFOUND,
    CONTROL,
    HEURISTIC,
    METHOD,
    MODELS,
    CheckResult,
    Criterion,
)
from gradsum.evaluation.trust import TrustReport
from gradsum.evaluation.verdicts import (
    criteria_frame,
    criteria_from_frame,
    criteria_per_image,
    judge_per_image,
    trust_table,
)

ROLES = {
    "null:random": CHANCE,
    "null:uniform": CHANCE,
    "null:class_area": CONFOUND,
    "null:sobel": HEURISTIC,
    "control:oracle": CONTROL,
}
METHODS = ("good", "coin", "null:random", "null:uniform", "null:class_area", "null:sobel", "control:oracle")
MEAN = {"good": 0.9, "coin": 0.55, "control:oracle": 1.0, "null:sobel": 0.7}
N_IMAGES, N_RESAMPLES, SEED = 40, 300, 7

LOCALISATION = Criterion("localisation", "hit", threshold=0.5, text="the map's peak is on a cause")
RATIO = Criterion("causal", "drop", denominator="gap", threshold=0.0, name="causal_drop", evidence=True)
LOWER = Criterion("causal", "rank", higher_is_better=False, name="causal_rank", against_nulls=False)
SHORTCUT = Criterion("shortcut", "rho", over=MODELS, text="across models")


def _per_image(model: str, columns: tuple[str, ...], seed: int, images: range) -> pd.DataFrame:
    """One model's per-image rows of every method: each column a method's mean plus shared noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for method in METHODS:
        values = {column: MEAN.get(method, 0.5) + rng.normal(0, 0.1, len(images)) for column in columns}
        frames.append(
            pd.DataFrame({"model": model, "method": method, "image": [f"{i:04d}" for i in images], **values})
        )
    return pd.concat(frames, ignore_index=True)


def _results() -> dict[str, CheckResult]:
    """Two checks on two models, one with a ratio and a lower-is-better criterion scored on other images
    (so a model's image union is wider than either check's), and one check decided across models."""
    localisation = pd.concat(
        [_per_image(m, ("hit",), k, range(N_IMAGES)) for k, m in enumerate(("cnn", "vit"))], ignore_index=True
    )
    causal = pd.concat(
        [
            _per_image(m, ("drop", "gap", "rank"), 10 + k, range(10, 10 + N_IMAGES))
            for k, m in enumerate(("cnn", "vit"))
        ],
        ignore_index=True,
    )
    causal["gap"] = causal["gap"].abs() + 0.5
    causal.loc[3, "drop"] = np.nan  # an undefined image stays a row, left out of the means
    shortcut = pd.DataFrame(
        [{"model": m, "method": k, "rho": 0.3, "rho_p": 0.01} for m in ("cnn", "vit") for k in METHODS]
    )
    return {
        "localisation": CheckResult({}, pd.DataFrame(), [LOCALISATION], per_image=localisation),
        "causal": CheckResult({}, pd.DataFrame(), [RATIO, LOWER], per_image=causal),
        "shortcut": CheckResult({}, shortcut, [SHORTCUT]),
    }


def _write(folder: Path, report: TrustReport) -> None:
    """The tables as the pipeline writes them (`gradsum.pipeline.trust.write_trust_tables`)."""
    for name, table in report.tables().items():
        write_table(folder, table_schema(name), table)


def test_criteria_round_trip_through_the_written_table(tmp_path: Path) -> None:
    criteria = [LOCALISATION, RATIO, LOWER, SHORTCUT]
    write_table(tmp_path, CRITERIA, criteria_frame(criteria))
    back = read_table(tmp_path, CRITERIA)
    assert back["key"].tolist() == ["localisation", "causal_drop", "causal_rank", "shortcut"]
    assert math.isnan(back.loc[2, "threshold"]) and back.loc[1, "threshold"] == 0.0
    assert criteria_from_frame(back) == criteria


def test_a_criteria_table_without_a_column_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match=r"criteria table: missing column.*threshold"):
        criteria_from_frame(criteria_frame([RATIO]).drop(columns="threshold"))


def test_per_image_rows_by_hand() -> None:
    per_image = pd.DataFrame(
        {
            "model": ["m", "m", "m"],
            "method": ["good", "good", "null:uniform"],
            "image": [2, 1, 1],
            "drop": [0.4, np.nan, 0.1],
            "gap": [0.8, 0.5, 0.5],
            "rank": [3.0, 1.0, 2.0],
        }
    )
    result = CheckResult({}, pd.DataFrame(), [RATIO, LOWER], per_image=per_image)
    frame = criteria_per_image({"causal": result}, ROLES)
    assert list(frame.columns) == list(CRITERIA_PER_IMAGE.names)
    expected = [
        ("m", "good", METHOD, "causal_drop", "1", math.nan, 0.5),
        ("m", "good", METHOD, "causal_drop", "2", 0.4, 0.8),
        ("m", "good", METHOD, "causal_rank", "1", 1.0, math.nan),
        ("m", "good", METHOD, "causal_rank", "2", 3.0, math.nan),
        ("m", "null:uniform", CHANCE, "causal_drop", "1", 0.1, 0.5),
        ("m", "null:uniform", CHANCE, "causal_rank", "1", 2.0, math.nan),
    ]
    got = list(frame.itertuples(index=False, name=None))
    assert len(got) == len(expected)
    for row, want in zip(got, expected, strict=True):
        assert row[:5] == want[:5]
        assert row[5:] == pytest.approx(want[5:], nan_ok=True)


def test_the_verdicts_recompute_exactly_from_the_two_written_tables(tmp_path: Path) -> None:
    results = _results()
    roles = {m: ROLES.get(m, METHOD) for m in METHODS}
    report = TrustReport(results, trust_table(results, roles, N_RESAMPLES, SEED))
    _write(tmp_path, report)
    criteria = criteria_from_frame(read_table(tmp_path, CRITERIA))
    per_image = read_table(tmp_path, CRITERIA_PER_IMAGE)
    recomputed = judge_per_image(criteria, per_image, N_RESAMPLES, SEED)
    trust = read_table(tmp_path, TRUST).set_index(["model", "method"])
    keys = [c.key for c in criteria if c.over != MODELS]
    assert sorted(recomputed) == sorted(trust.index)
    outcomes = set()
    for row, columns in recomputed.items():
        assert {c for c in columns if any(c.startswith(k) for k in keys)} == set(columns)
        for column, value in columns.items():
            stored = trust.loc[row, column]
            # exactly: the CSV keeps every float's shortest round-trip form
            assert stored == value or (pd.isna(stored) and (value == "" or pd.isna(value))), (row, column)
        outcomes |= {columns[f"{k}_verdict"] for k in keys}
    # the fixture decides more than one way, so the comparison covers more than one branch of the rule
    assert len(outcomes) > 1
    assert {f"{k}_margin_ci_low" for k in keys} <= set(trust.columns)


def test_every_trust_report_writes_both_tables(tmp_path: Path) -> None:
    results = _results()
    report = TrustReport(results, trust_table(results, ROLES, 50, 0))
    tables = report.tables()
    assert [schema.name for schema in VERDICT_TABLES] == [CRITERIA.name, CRITERIA_PER_IMAGE.name]
    assert {CRITERIA.name, CRITERIA_PER_IMAGE.name} <= set(tables)
    per_image = tables[CRITERIA_PER_IMAGE.name]
    # models × methods × (40 localisation + 2 × 40 causal images); the shortcut is decided over models
    assert len(per_image) == 2 * len(METHODS) * 3 * N_IMAGES
    assert set(per_image["criterion"]) == {"localisation", "causal_drop", "causal_rank"}
    assert set(zip(per_image["method"], per_image["role"], strict=True)) == {
        (m, ROLES.get(m, METHOD)) for m in METHODS
    }
    _write(tmp_path, report)
    assert (tmp_path / CRITERIA_PER_IMAGE.file).suffix == ".parquet"
    pd.testing.assert_frame_equal(read_table(tmp_path, CRITERIA_PER_IMAGE), per_image)


def test_without_criteria_both_tables_are_written_empty_with_their_columns(tmp_path: Path) -> None:
    report = TrustReport({}, trust_table({}, ROLES))
    _write(tmp_path, report)
    for schema in VERDICT_TABLES:
        back = read_table(tmp_path, schema)
        assert back.empty and list(back.columns) == list(schema.names)
