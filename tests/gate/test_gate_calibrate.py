"""Proposing a policy from seed twins: each bar is the loosest figure a twin shows, and every twin passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gate_results import CARD, IMAGES, per_image, shifted, write_results
from gradsum.gate import GateInputError, gate, load_policy, policy_from_dict, propose_policy, write_policy


def _only_method(frame: pd.DataFrame, method: str, moved: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `method`'s rows taken from `moved`."""
    rows = frame["method"] == method
    out = frame.copy()
    out.loc[rows] = moved.loc[rows]
    return out


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A baseline and two twins: sky's mass share +0.01 everywhere (r2 0.94), and +0.02 under gradrollout
    only (r2 0.96)."""
    root = tmp_path_factory.mktemp("twins")
    base = write_results(root / "base")
    one = write_results(
        root / "seed1",
        shifted(per_image(), "sky", "mass_share", 0.01),
        cards={"vit": {**CARD, "metrics": {**CARD["metrics"], "r2": 0.94}}},
    )
    frame = per_image()
    two = write_results(
        root / "seed2",
        _only_method(frame, "gradrollout", shifted(frame, "sky", "mass_share", 0.02)),
        cards={"vit": {**CARD, "metrics": {**CARD["metrics"], "r2": 0.96}}},
    )
    return base, [one, two]


def test_each_bar_is_the_loosest_twin_figure(twins: tuple[Path, list[Path]]) -> None:
    base, folders = twins
    data = propose_policy(base, folders, model="vit")
    checks = data["checks"]
    per_method = ["class_shift", "class_shift", "spearman", "top_k", "top_k"]
    assert [c["check"] for c in checks] == [*per_method, *per_method, "verdict", "task_metric"]
    # the profile checks have bars of their own per method; the model's own checks cover it whole
    assert [c.get("methods") for c in checks] == [["gradcam"]] * 5 + [["gradrollout"]] * 5 + [None, None]
    assert all(c["models"] == ["vit"] for c in checks)
    # constant shifts: the intervals are the shift itself; the score moved nowhere. Sky moved +0.01 under
    # gradcam (the first twin) and +0.02 under gradrollout (the second)
    assert [(c["statistic"], c["tolerance"]) for c in (checks[0], checks[1], checks[5], checks[6])] == [
        ("score", 0.0),
        ("mass_share", 0.01),
        ("score", 0.0),
        ("mass_share", 0.02),
    ]
    # the score profiles did not move: every resample ranks them alike
    assert checks[2]["floor"] == checks[7]["floor"] == 1.0
    # score and mass share both rank road, car, building, vegetation, sky in the baseline and both twins,
    # under both methods
    for top, statistic in zip(
        (checks[3], checks[4], checks[8], checks[9]), ["score", "mass_share"] * 2, strict=True
    ):
        assert (top["k"], top["keep_in"], top["keep_out"], top["statistic"]) == (
            3,
            ["building", "car", "road"],
            ["sky", "vegetation"],
            statistic,
        )
    # r2 0.95 → 0.94 is the largest drop (the other twin improved)
    assert checks[11]["tolerance"] == 0.01
    notes = data["calibration"]
    assert notes["twins"] == ", ".join(str(f) for f in folders)
    assert notes["checks[1]"] == (
        "largest |CI bound| over the twins: seed1 (vit/gradcam), class sky: [+0.0100, +0.0100]"
    )
    assert notes["checks[6]"] == (
        "largest |CI bound| over the twins: seed2 (vit/gradrollout), class sky: [+0.0200, +0.0200]"
    )
    assert notes["checks[11]"].startswith("largest drop over the twins: seed1: r2 0.95 → 0.94")


def test_every_twin_passes_the_proposal(twins: tuple[Path, list[Path]]) -> None:
    base, folders = twins
    policy = policy_from_dict(propose_policy(base, folders, model="vit"), "proposal")
    for twin in folders:
        report = gate(base, twin, policy)
        assert report.passed, [o.line() for o in report.violations]


def test_a_proposal_for_one_method_selects_it(twins: tuple[Path, list[Path]]) -> None:
    base, folders = twins
    data = propose_policy(base, folders[:1], model="vit", method="gradcam")
    assert [c.get("methods") for c in data["checks"]] == [["gradcam"]] * 5 + [None, None]
    assert data["checks"][1]["tolerance"] == 0.01


def test_a_noisy_twin_sets_the_bar_at_its_widest_interval(tmp_path: Path) -> None:
    base = write_results(tmp_path / "base")
    noise = np.random.default_rng(0).normal(0.0, 0.03, len(IMAGES) * 2)
    twin = write_results(tmp_path / "twin", shifted(per_image(), "road", "mass_share", noise))
    data = propose_policy(base, [twin], model="vit", method="gradcam")
    probe = policy_from_dict(
        {
            "checks": [
                {"check": "class_shift", "statistic": "mass_share", "tolerance": 0.0, "methods": ["gradcam"]}
            ]
        },
        "p",
    )
    (outcome,) = gate(base, twin, probe).outcomes
    reach = max(max(abs(r["low"]), abs(r["high"])) for r in outcome.details)
    assert data["checks"][1]["tolerance"] == pytest.approx(np.ceil(reach * 1e4) / 1e4)
    assert 0 < reach <= data["checks"][1]["tolerance"] < reach + 1e-4


def test_the_written_policy_loads_back_with_its_notes_as_comments(
    twins: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    base, folders = twins
    data = propose_policy(base, folders, model="vit")
    path = write_policy(data, tmp_path / "policy.yaml")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# a gate policy proposed by `gradsum gate --calibrate`")
    assert lines[1] == f"# twins: {data['calibration']['twins']}"
    assert (
        "  - {check: class_shift, statistic: mass_share, tolerance: 0.02, models: [vit], methods: [gradrollout]}"
        "  # largest |CI bound|" in "\n".join(lines)
    )
    loaded = load_policy(path)
    assert [s.options for s in loaded.checks] == [s.options for s in policy_from_dict(data, "data").checks]
    assert loaded.calibration == {}


def test_a_proposal_needs_a_twin(twins: tuple[Path, list[Path]]) -> None:
    with pytest.raises(GateInputError, match="twins: a proposal needs at least one twin"):
        propose_policy(twins[0], [], model="vit")


def test_no_verdict_check_is_proposed_for_a_baseline_without_trust_tables(tmp_path: Path) -> None:
    # a policy must not ask for what the baseline cannot give: the gate would stop (exit 2) on every candidate
    base = write_results(tmp_path / "base")
    twin = write_results(tmp_path / "twin", shifted(per_image(), "sky", "mass_share", 0.01))
    for folder in (base, twin):
        (folder / "trust.csv").unlink()
    data = propose_policy(base, [twin], model="vit", method="gradcam")
    assert "verdict" not in [c["check"] for c in data["checks"]]
    assert data["calibration"]["verdict"].startswith("no verdict check: the baseline ran no trust checks")
    assert gate(base, twin, policy_from_dict(data, "proposal")).passed


def test_a_class_that_takes_the_map_but_not_the_score_enters_the_mass_share_top_k(tmp_path: Path) -> None:
    """Sky's share of the map rises to second while its score (relevance per pixel) stays last: the
    proposal's mass-share top 3 keeps it out, its score top 3 cannot see it; a twin passes both."""
    base = write_results(tmp_path / "base")
    twin = write_results(tmp_path / "twin", shifted(per_image(), "sky", "mass_share", 0.01))
    data = propose_policy(base, [twin], model="vit", method="gradcam")
    tops = {c["statistic"]: c for c in data["checks"] if c["check"] == "top_k"}
    assert tops["mass_share"]["keep_out"] == tops["score"]["keep_out"] == ["sky", "vegetation"]
    policy = policy_from_dict(data, "proposal")
    assert gate(base, twin, policy).passed
    taken = write_results(tmp_path / "sky", shifted(per_image(), "sky", "mass_share", 0.25))
    report = gate(base, taken, policy)
    by_statistic = {o.name: o for o in report.outcomes if o.check == "top_k"}
    assert [o.verdict for o in by_statistic.values()] == ["pass", "fail"]
    # sky's mass share 0.08 + 0.25 = 0.33 is second to road's 0.40 in every resample
    assert "sky entered the top 3 (rank 2 of 5; baseline rank 5; in the top 3 in 100% of resamples)" in (
        list(by_statistic.values())[1].message
    )
