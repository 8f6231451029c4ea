"""The Shortcuts section: hand-made shortcut tables in, the tables, verdict sentence, onset, fine-tuning
numbers and figures out; no section at all when the check did not run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer
from report_fixtures import write_results

from gradsum.evaluation.checks.shortcut import (
    DETECTION_TABLE,
    FINETUNE_METHODS_TABLE,
    FINETUNE_TABLE,
    METHODS_TABLE,
    MODELS_TABLE,
    ONSET_TABLE,
    TABLE_COLUMNS,
    detection_outcomes,
    finetune_outcomes,
    t_interval,
)
from gradsum.report import load_results, plots, write_report
from gradsum.report.html import render_html
from gradsum.report.results import Results
from gradsum.report.shortcut import (
    ShortcutTables,
    cue_class,
    detection_figure,
    detection_sentence,
    detection_table,
    finetune_figure,
    finetune_sentence,
    finetune_table,
    interval_text,
    models_table,
    series_figure,
    shortcut_findings,
    shortcut_section,
    shortcut_tables,
)
from gradsum.report.writer import pending_plots

NAN = math.nan
#: (model, series, rho, base or "" when not fine-tuned, pull, r2_decorrelated, r2_in_distribution)
MODEL_ROWS = (
    ("vit_rho0", "vit", 0.0, "", 0.01, 0.80, 0.85),
    ("vit_rho75", "vit", 0.75, "", 0.10, 0.60, 0.86),
    ("vit_rho90", "vit", 0.9, "", 0.20, 0.40, 0.88),
    ("vit_rho99", "vit", 0.99, "", 0.40, 0.10, 0.90),
    ("pilotnet_rho0", "pilotnet", 0.0, "", 0.02, 0.78, 0.84),
    ("pilotnet_rho90", "pilotnet", 0.9, "", 0.15, 0.50, 0.86),
    ("vit_rho99_ft0", "vit", 0.99, "vit_rho99", 0.05, 0.50, 0.89),
    ("vit_rho99_ft1", "vit", 0.99, "vit_rho99", 0.04, 0.60, 0.885),
    ("vit_rho99_ft2", "vit", 0.99, "vit_rho99", 0.06, 0.55, 0.895),
)
#: method → (null, spearman, ci_low, ci_high, p_value, spearman_vs_rho)
DETECTION_ROWS = {
    "gradcam": (False, 0.6, 0.2, 0.9, 0.01, 0.8),
    "rollout": (False, 0.05, -0.3, 0.4, 0.45, 0.1),
    "null:random": (True, 0.0, -0.5, 0.3, 0.5, 0.0),
}
#: (method, series) → rhos at which the cue mass is above the fair model's
DETECTED = {("gradcam", "vit"): (0.75, 0.9, 0.99), ("gradcam", "pilotnet"): (0.9,)}


def _models() -> pd.DataFrame:
    rows = []
    for model, series, rho, base, pull, r2_dec, r2_in in MODEL_ROWS:
        rows.append(
            {
                "model": model,
                "series": series,
                "rho": rho,
                "finetuned": bool(base),
                "base": base,
                "pull": pull,
                "pull_ci_low": pull - 0.01,
                "pull_ci_high": pull + 0.02,
                "abs_effect": abs(pull),
                "abs_effect_ci_low": abs(pull),
                "abs_effect_ci_high": abs(pull),
                "n_images": 20,
                "r2_test": 0.85,
                "mae_test": 0.1,
                "r2_agreeing": 0.9,
                "mae_agreeing": 0.1,
                "r2_decorrelated": r2_dec,
                "mae_decorrelated": 0.2,
                "r2_decorrelated_ci_low": r2_dec - 0.05,
                "r2_decorrelated_ci_high": r2_dec + 0.05,
                "r2_in_distribution": r2_in,
                "r2_in_distribution_ci_low": r2_in - 0.01,
                "r2_in_distribution_ci_high": r2_in + 0.01,
                "gap": 0.9 - r2_dec,
            }
        )
    return pd.DataFrame(rows)


def _cue_mass(method: str, pull: float) -> float:
    """gradcam's cue mass grows with the pull; the others' do not."""
    return 0.1 + pull if method == "gradcam" else 0.2 - 0.1 * pull


def _methods() -> pd.DataFrame:
    rows = []
    for model, series, rho, base, pull, _, _ in MODEL_ROWS:
        for method, (null, *_) in DETECTION_ROWS.items():
            mass = _cue_mass(method, pull)
            diff = mass - _cue_mass(method, 0.01)
            rows.append(
                {
                    "model": model,
                    "method": method,
                    "null": null,
                    "series": series,
                    "rho": rho,
                    "finetuned": bool(base),
                    "cue_score": mass,
                    "cue_score_ci_low": mass,
                    "cue_score_ci_high": mass,
                    "cue_mass_share": mass,
                    "cue_mass_share_ci_low": mass - 0.02,
                    "cue_mass_share_ci_high": mass + 0.03,
                    "foreground_mass_share": 0.5,
                    "foreground_mass_share_ci_low": 0.45,
                    "foreground_mass_share_ci_high": 0.55,
                    "mass_diff_vs_fair": diff,
                    "mass_diff_vs_fair_ci_low": diff - 0.01,
                    "mass_diff_vs_fair_ci_high": diff + 0.01,
                    "detected": (method, series) in DETECTED and rho in DETECTED[(method, series)],
                }
            )
    return pd.DataFrame(rows)


def _detection() -> pd.DataFrame:
    return pd.DataFrame(
        [(m, null, 9, s, lo, hi, p, r) for m, (null, s, lo, hi, p, r) in DETECTION_ROWS.items()],
        columns=list(TABLE_COLUMNS[DETECTION_TABLE]),
    )


def _onset() -> pd.DataFrame:
    rows = []
    for method, (null, *_) in DETECTION_ROWS.items():
        for series in ("vit", "pilotnet"):
            rhos = DETECTED.get((method, series), ())
            first = min(rhos) if rhos else NAN
            rows.append((method, null, series, first, ",".join(f"{r:g}" for r in rhos)))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS[ONSET_TABLE]))


#: fine-tuned model → (gap_recovered, r2_in_distribution_after); the base's before values are the same for all
FINETUNED = {"vit_rho99_ft0": (0.5, 0.89), "vit_rho99_ft1": (0.7, 0.885), "vit_rho99_ft2": (0.6, 0.895)}
BASE_IN_DISTRIBUTION = 0.9


def _finetune() -> pd.DataFrame:
    models = _models().set_index("model")
    rows = []
    for seed, (model, (recovered, r2_in)) in enumerate(FINETUNED.items()):
        after = models.loc[model]
        rows.append(
            {
                "model": model,
                "base": "vit_rho99",
                "seed": seed,
                "rho": 0.99,
                "r2_decorrelated_before": 0.1,
                "r2_decorrelated_after": after["r2_decorrelated"],
                "r2_in_distribution_before": BASE_IN_DISTRIBUTION,
                "r2_in_distribution_after": r2_in,
                "r2_test_before": 0.85,
                "r2_test_after": 0.85,
                "pull_before": 0.4,
                "pull_after": after["pull"],
                "gap_recovered": recovered,
            }
        )
    return pd.DataFrame(rows)


def _finetune_methods() -> pd.DataFrame:
    rows = [
        (model, "vit_rho99", "gradcam", 0.5, 0.1 + 0.01 * i, 0.3, 0.5 + 0.01 * i)
        for i, model in enumerate(FINETUNED)
    ]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS[FINETUNE_METHODS_TABLE]))


def _contract(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The table with exactly the check's columns, in its order."""
    assert set(frame.columns) == set(TABLE_COLUMNS[name]), name
    return frame[list(TABLE_COLUMNS[name])]


def _checks(finetune: bool = True) -> dict[str, pd.DataFrame]:
    """The shortcut tables as the check writes them; the fine-tuning ones empty when `finetune` is False."""
    tables = {
        MODELS_TABLE: _models(),
        METHODS_TABLE: _methods(),
        DETECTION_TABLE: _detection(),
        ONSET_TABLE: _onset(),
        FINETUNE_TABLE: _finetune(),
        FINETUNE_METHODS_TABLE: _finetune_methods(),
    }
    if not finetune:
        tables[FINETUNE_TABLE] = tables[FINETUNE_METHODS_TABLE] = pd.DataFrame()
    return {name: frame if frame.empty else _contract(name, frame) for name, frame in tables.items()}


def _results(checks: dict[str, pd.DataFrame], trust: pd.DataFrame | None = None) -> Results:
    profiles = pd.DataFrame(
        [("vit_rho0", "gradcam", "sky", 23, 0.5, 0.4, 0.6, 4)],
        columns=[
            "model",
            "method",
            "class",
            "class_id",
            "score_mean",
            "score_ci_low",
            "score_ci_high",
            "n_images",
        ],
    )
    return Results(
        path=Path("."), manifest={}, per_image=pd.DataFrame(), profiles=profiles, trust=trust, checks=checks
    )


@pytest.fixture
def tables() -> ShortcutTables:
    found = shortcut_tables(_results(_checks()))
    assert found is not None
    return found


def test_section_has_the_lead_and_both_tables() -> None:
    page = shortcut_section(_results(_checks()))
    assert "known answer" in page and "rho 0, 0.75, 0.9, 0.99" in page
    assert "What each model learned" in page and "Does the attribution see it?" in page
    # pull and R² decorrelated with their CIs, as "value [low, high]"
    assert "0.40 [0.39, 0.42]" in page and "0.10 [0.05, 0.15]" in page
    assert "0.60 [0.20, 0.90]" in page  # gradcam's Spearman ρ
    assert "<tr class=null><td>null:random</td>" in page


def test_the_cue_class_comes_from_the_run_config() -> None:
    results = _results(_checks())
    assert cue_class(results) == "sky"  # the check's default
    options = {"evaluation": {"options": {"shortcut": {"cue": "building"}}}}
    configured = Results(**{**vars(results), "manifest": {"config": options}})
    assert cue_class(configured) == "building"
    assert "on the cue class (building)" in shortcut_section(configured)


def test_models_table_rows(tables: ShortcutTables) -> None:
    frame = models_table(tables).set_index("model")
    assert frame.loc["vit_rho75", "pull [95% CI]"] == "0.10 [0.09, 0.12]"
    assert frame.loc["vit_rho99", "R² in distribution [95% CI]"] == "0.90 [0.89, 0.91]"
    assert frame.loc["vit_rho99_ft1", "fine-tuned from"] == "vit_rho99"
    assert frame.loc["vit_rho99", "fine-tuned from"] == ""
    assert frame.loc["vit_rho90", "gap"] == "0.50"
    assert list(frame.index[:2]) == ["pilotnet_rho0", "pilotnet_rho90"]  # by series, then rho


def test_verdicts_from_the_permutation_p_when_the_trust_table_has_none(tables: ShortcutTables) -> None:
    verdicts, from_trust = detection_outcomes(tables.detection, None)
    assert not from_trust
    # DETECTION_ROWS' p: gradcam 0.01 < α, rollout 0.45 between α and 0.5, null:random 0.5
    assert verdicts == {"gradcam": "pass", "rollout": "inconclusive", "null:random": "fail"}
    sentence = detection_sentence(tables, verdicts, "sky")
    assert sentence == (
        "Sky mass follows the causal pull for gradcam (pass: 1 of 2); it is not shown either way for rollout "
        "(inconclusive)."
    )


def test_verdicts_come_from_the_trust_table_when_it_has_them(tables: ShortcutTables) -> None:
    # The trust table's outcome wins over the detection table's p; a method's model rows combine as a
    # row's criteria do (a fail wins); rows where the check did not run are left out.
    trust = pd.DataFrame(
        [
            ("vit_rho0", "gradcam", False, "pass"),
            ("vit_rho90", "gradcam", False, "fail"),
            ("vit_rho0", "rollout", False, "uninformative"),
            ("vit_rho90", "rollout", False, "not run"),
            ("vit_rho0", "null:random", True, "pass"),
        ],
        columns=["model", "method", "null", "shortcut_verdict"],
    )
    verdicts, from_trust = detection_outcomes(tables.detection, trust)
    assert from_trust
    assert verdicts == {"gradcam": "fail", "rollout": "uninformative", "null:random": "pass"}
    sentence = detection_sentence(tables, verdicts, "sky")
    assert sentence.startswith(
        "Sky mass follows the causal pull for no method (pass: 0 of 2); it does not for gradcam (fail); "
        "the check cannot tell for rollout (uninformative)."
    )
    assert "Null explainer(s) passing as well" in sentence and "null:random" in sentence
    page = shortcut_section(_results(_checks(), trust))
    assert "the trust table&#x27;s shortcut verdict" in page and "p &lt; 0.05" in page
    assert '<span class="uninformative">uninformative</span>' in page
    # a trust table that judged none of the methods: the detection table's p decides
    unjudged = trust.assign(shortcut_verdict="not run")
    assert detection_outcomes(tables.detection, unjudged) == (
        detection_outcomes(tables.detection, None)[0],
        False,
    )


def test_detection_table_order_onset_and_verdict(tables: ShortcutTables) -> None:
    verdicts, _ = detection_outcomes(tables.detection, None)
    frame = detection_table(tables, verdicts)
    assert list(frame["method"]) == ["gradcam", "rollout", "null:random"]  # real by Spearman, then nulls
    row = frame.set_index("method").loc["gradcam"]
    assert row["first rho detected (vit)"] == "0.75"
    assert row["first rho detected (pilotnet)"] == "0.9"
    assert row["Spearman ρ with pull [95% CI]"] == "0.60 [0.20, 0.90]"
    assert row["verdict"] == "pass"
    assert (
        frame.set_index("method").loc["rollout", ["first rho detected (vit)", "verdict"]]
        == ["—", "inconclusive"]
    ).all()


def test_an_interval_reads_mean_and_ends_or_the_mean_alone() -> None:
    assert interval_text(t_interval([0.5, 0.7, 0.6])) == "0.600 [0.352, 0.848]"
    assert interval_text(t_interval([0.3])) == "0.300" and interval_text(t_interval([NAN])) == "—"


def test_finetune_sentence_and_table_numbers(tables: ShortcutTables) -> None:
    (outcome,) = finetune_outcomes(tables.finetune)
    # hand computation: gap recovered 0.5, 0.7, 0.6 → 0.60 ± t(0.975, 2)·0.1/√3 = 0.60 ± 0.248
    assert (outcome.recovered.low, outcome.recovered.high) == pytest.approx((0.35159, 0.84841), abs=1e-5)
    # in-distribution change −0.010, −0.015, −0.005 → −0.010 ± t(0.975, 2)·0.005/√3 = −0.010 ± 0.0124
    change = outcome.in_distribution_change
    assert (change.mean, change.low, change.high) == pytest.approx((-0.01, -0.02242, 0.00242), abs=1e-5)
    assert outcome.recovers_half and outcome.keeps_in_distribution
    assert finetune_sentence(outcome) == (
        "vit_rho99: fine-tuning (3 seeds) recovered 0.60 [0.35, 0.85] of the decorrelated-R² gap "
        "(R² decorrelated 0.100 → 0.550 [0.426, 0.674]), at least half; in-distribution R² changed by "
        "-0.010 [-0.022, 0.002] (no fall beyond 0.02): a success."
    )
    frame = finetune_table(tables).set_index("quantity")
    assert frame.loc["gap recovered", "after [95% t CI]"] == "0.600 [0.352, 0.848]"
    assert frame.loc["R² in distribution", "before"] == "0.900"
    assert frame.loc["cue mass · gradcam", "after [95% t CI]"] == interval_text(t_interval([0.1, 0.11, 0.12]))
    page = shortcut_section(_results(_checks()))
    assert "Relevance-guided fine-tuning" in page and "recovered 0.60 [0.35, 0.85]" in page


def test_finetune_that_hurts_in_distribution_is_not_a_success() -> None:
    checks = _checks()
    checks[FINETUNE_TABLE] = checks[FINETUNE_TABLE].assign(r2_in_distribution_after=[0.85, 0.86, 0.87])
    found = shortcut_tables(_results(checks))
    assert found is not None
    (outcome,) = finetune_outcomes(found.finetune)
    assert outcome.in_distribution_change.mean == pytest.approx(-0.04)
    assert outcome.recovers_half and not outcome.keeps_in_distribution
    assert "(a fall beyond 0.02): not a success." in finetune_sentence(outcome)


def test_no_finetuning_no_finetune_part() -> None:
    results = _results(_checks(finetune=False))
    assert "Relevance-guided fine-tuning" not in shortcut_section(results)
    assert [p.stem for p in pending_plots(results) if p.section == "shortcuts"] == [
        "shortcut_detection",
        "shortcut_series",
    ]


def test_no_section_without_the_shortcut_tables() -> None:
    results = _results({})
    assert shortcut_tables(results) is None and shortcut_section(results) == ""
    assert not [p for p in pending_plots(results) if p.section == "shortcuts"]
    page = render_html(results, [])
    assert 'id="shortcuts"' not in page and 'href="#shortcuts"' not in page and 'id="trust"' in page


def test_detection_figure_plots_the_tables_values(tables: ShortcutTables) -> None:
    fig = detection_figure(tables)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["gradcam: Spearman ρ = 0.60 [0.20, 0.90]", "rollout: Spearman ρ = 0.05 [-0.30, 0.40]"]
    ax = fig.axes[0]
    drawn = np.vstack([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
    models, methods = _models().set_index("model"), _methods()
    gradcam = methods[methods["method"] == "gradcam"].set_index("model")
    expected = np.array([[models.loc[m, "pull"], gradcam.loc[m, "cue_mass_share"]] for m in models.index])
    assert sorted(map(tuple, drawn.round(9))) == sorted(map(tuple, expected.round(9)))
    assert plots.figure_bytes(fig, "png").startswith(b"\x89PNG")


def test_series_figure_draws_each_series_against_rho(tables: ShortcutTables) -> None:
    fig = series_figure(tables)
    ax = fig.axes[0]
    assert ax.get_title() == "gradcam"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.75", "0.9", "0.99"]
    lines = {c.get_label(): c.lines[0] for c in ax.containers if isinstance(c, ErrorbarContainer)}
    vit = lines["vit"]
    assert list(vit.get_xdata()) == [0, 1, 2, 3]
    assert list(vit.get_ydata()) == pytest.approx([_cue_mass("gradcam", p) for p in (0.01, 0.10, 0.20, 0.40)])
    assert list(lines["pilotnet"].get_xdata()) == [0, 2]  # rho 0 and 0.9 on the shared axis
    # one legend for the figure names every series, whichever panels draw it
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == sorted(_models()["series"].unique())
    assert plots.figure_bytes(fig, "png").startswith(b"\x89PNG")


def test_finetune_figure_pairs_seeds_before_and_after(tables: ShortcutTables) -> None:
    fig = finetune_figure(tables)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "R² decorrelated",
        "R² in distribution",
        "causal pull",
        "cue mass · gradcam",
        "foreground mass · gradcam",
    ]
    seeds = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 2]
    assert sorted(tuple(line.get_ydata()) for line in seeds) == [(0.1, 0.5), (0.1, 0.55), (0.1, 0.6)]
    assert plots.figure_bytes(fig, "png").startswith(b"\x89PNG")


def _results_folder(folder: Path) -> Path:
    """A results folder of one model with the shortcut tables written and listed as its manifest would."""
    write_results(folder, models={"vit_rho0": ("vit", ("gradcam",))})
    for name, frame in _checks().items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["trust_tables"] = sorted(_checks())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_write_report_embeds_the_section_and_its_figures(tmp_path: Path) -> None:
    folder = _results_folder(tmp_path / "run")
    page = write_report(folder).read_text()
    section = page[page.index('<section id="shortcuts">') : page.index('<section id="profiles">')]
    assert 'href="#shortcuts"' in page and "<h2>Shortcuts</h2>" in section
    assert section.count('src="data:image/') == 3
    assert "rollout (inconclusive)" in section  # the CSV round trip keeps the flags and the p values
    for stem in ("shortcut_detection", "shortcut_series", "shortcut_finetune"):
        assert (folder / "plots" / f"{stem}.png").stat().st_size > 0
    assert load_results(folder).checks[MODELS_TABLE]["model"].tolist() == _models()["model"].tolist()


def test_the_findings_lead_with_the_shortcut_answers(tmp_path: Path) -> None:
    folder = _results_folder(tmp_path / "run")
    results = load_results(folder)
    answers = shortcut_findings(results)
    tables = shortcut_tables(results)
    assert tables is not None
    verdicts, _ = detection_outcomes(tables.detection, results.trust)
    assert answers[0] == "Planted shortcut: " + detection_sentence(tables, verdicts, "sky")
    assert answers[1:] == [finetune_sentence(outcome) for outcome in finetune_outcomes(tables.finetune)]
    page = write_report(folder).read_text()
    lead = page[page.index('<section id="findings">') : page.index('<section id="trust">')]
    assert "Planted shortcut: Sky mass follows the causal pull for" in lead and 'href="#shortcuts"' in lead
    assert shortcut_findings(load_results(write_results(tmp_path / "plain"))) == []


def test_the_finetune_table_shows_the_causal_profile_before_and_after() -> None:
    checks = _checks()
    # erasure |Δ| of sky and road (the default cue and foreground) for the base and its fine-tunes; car is
    # neither, and a flip-rate row is another effect: both left out
    erasure = [("vit_rho99", "sky", 0.30), ("vit_rho99", "road", 0.10), ("vit_rho99", "car", 0.5)]
    erasure += [(m, "sky", 0.1 + 0.02 * i) for i, m in enumerate(FINETUNED)]
    erasure += [(m, "road", 0.2 + 0.01 * i) for i, m in enumerate(FINETUNED)]
    causal = pd.DataFrame(erasure, columns=["model", "class", "mean"]).assign(effect="abs_delta")
    checks["causal_profiles"] = pd.concat(
        [causal, causal.head(1).assign(effect="flip_rate", mean=9.0)], ignore_index=True
    )
    found = shortcut_tables(_results(checks))
    assert found is not None
    frame = finetune_table(found).set_index("quantity")
    assert frame.loc["erasure |Δ| · sky", "before"] == "0.300"
    assert frame.loc["erasure |Δ| · sky", "after [95% t CI]"] == interval_text(t_interval([0.1, 0.12, 0.14]))
    assert frame.loc["erasure |Δ| · road", "after [95% t CI]"] == interval_text(t_interval([0.2, 0.21, 0.22]))
    assert not any("car" in q for q in frame.index)
    order = list(frame.index)
    assert (
        order.index("gap recovered") < order.index("erasure |Δ| · road") < order.index("cue mass · gradcam")
    )


def test_a_clean_base_is_judged_on_harm_alone_and_all_passing_reads_plainly() -> None:
    checks = _checks()
    checks[FINETUNE_TABLE] = checks[FINETUNE_TABLE].assign(gap_recovered=NAN)
    found = shortcut_tables(_results(checks))
    assert found is not None
    (outcome,) = finetune_outcomes(found.finetune)
    assert not outcome.has_gap
    assert finetune_sentence(outcome) == (
        "vit_rho99 (no gap to a clean model to recover): fine-tuning (3 seeds) moved R² decorrelated 0.100 → "
        "0.550 [0.426, 0.674]; in-distribution R² changed by -0.010 [-0.022, 0.002] (no fall beyond 0.02)."
    )
    verdicts = {method: "pass" for method in found.detection["method"]}
    assert detection_sentence(found, verdicts, "sky").startswith(
        "Sky mass follows the causal pull for gradcam, rollout (pass: 2 of 2). Null explainer(s) passing"
    )
