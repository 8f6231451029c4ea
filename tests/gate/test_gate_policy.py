"""Policies: what a file may say, and the one-line refusals naming the file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gate_results import write_results
from gradsum.errors import GradSUMError, SpecError
from gradsum.gate import (
    BUILTIN_POLICIES,
    GATE_CHECKS,
    PolicyMismatchError,
    gate,
    load_policy,
    policy_from_dict,
)
from gradsum.gate.checks import ClassShiftOptions, TopKOptions

PLAN_EXAMPLE = """\
# what this policy guards
alpha: 0.05          # two-sided; intervals are 1 - alpha
resamples: 1000      # image bootstrap
seed: 0
inconclusive: pass
checks:
  - {check: class_shift, statistic: mass_share, tolerance: 0.05}
  - {check: class_shift, classes: [road, car], statistic: score, tolerance: 0.03}
  - {check: spearman, floor: 0.8}
  - {check: top_k, k: 3, keep_in: [road], keep_out: [sky]}
  - {check: verdict}
  - {check: task_metric, tolerance: 0.02, models: [vit], name: r2_guard}
"""


def _policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _refused(data: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        policy_from_dict(data, "p.yaml")


def test_the_plan_example_loads_with_its_options_and_names(tmp_path: Path) -> None:
    policy = load_policy(_policy(tmp_path, PLAN_EXAMPLE))
    assert policy.source == str(tmp_path / "policy.yaml")
    assert [s.name for s in policy.checks] == [
        "class_shift",
        "class_shift_2",
        "spearman",
        "top_k",
        "verdict",
        "r2_guard",
    ]
    assert policy.checks[0].options == ClassShiftOptions(tolerance=0.05, statistic="mass_share")
    assert policy.checks[1].options.classes == ("road", "car")
    assert policy.checks[3].options == TopKOptions(k=3, keep_in=("road",), keep_out=("sky",))
    assert policy.checks[5].models == ("vit",) and policy.checks[5].methods is None
    assert (policy.alpha, policy.resamples, policy.seed, policy.inconclusive) == (0.05, 1000, 0, "pass")


def test_a_builtin_policy_loads_by_name_and_an_unknown_name_lists_them() -> None:
    assert [s.check for s in load_policy("default").checks] == [
        "class_shift",
        "spearman",
        "verdict",
        "task_metric",
    ]
    # a shipped policy is a YAML file like a user's: errors and reports name that file
    assert load_policy("default").source.endswith("gradsum/gate/policies/default.yaml")
    with pytest.raises(SpecError, match=r"defualt: no such policy file.*did you mean default\?"):
        load_policy("defualt")
    assert BUILTIN_POLICIES.names() == ["default"]


def test_every_check_is_registered_with_options_and_a_description() -> None:
    assert GATE_CHECKS.names() == ["class_shift", "spearman", "task_metric", "top_k", "verdict"]
    assert all(check.description and check.name == name for name, check in GATE_CHECKS.items())


@pytest.mark.parametrize(
    ("checks", "match"),
    [
        (
            [{"check": "clas_shift", "tolerance": 0.1}],
            r"p.yaml: field 'checks\[0\].check': unknown gate check 'clas_shift' \(did you mean class_shift\?\); valid: class_shift, spearman, task_metric, top_k, verdict",
        ),
        (
            [{"check": "spearman", "floor": 0.8, "flor": 1}],
            r"p.yaml: unknown field 'checks\[0\].flor'; valid fields: floor, statistic",
        ),
        ([{"check": "spearman"}], r"p.yaml: missing field 'checks\[0\].floor'"),
        ([{"tolerance": 0.1}], r"p.yaml: missing field 'checks\[0\].check'"),
        (
            [{"check": "class_shift", "tolerance": "0.1"}],
            r"p.yaml: field 'checks\[0\].tolerance' should be float, got '0.1'",
        ),
        (
            [{"check": "class_shift", "tolerance": -0.1}],
            r"p.yaml: field 'checks\[0\].tolerance' is -0.1; it must lie in \[0, ∞\]",
        ),
        (
            [{"check": "class_shift", "tolerance": 0.1, "statistic": "mass"}],
            r"field 'checks\[0\].statistic' is 'mass'; valid: score, mass_share, lift",
        ),
        (
            [{"check": "class_shift", "tolerance": 0.1, "classes": ["road", "skye"]}],
            r"field 'checks\[0\].classes\[1\]': unknown class 'skye' \(did you mean sky\?\)",
        ),
        (
            [{"check": "top_k", "keep_out": ["unlabeled"]}],
            r"field 'checks\[0\].keep_out\[0\]': unknown class 'unlabeled'",
        ),
        (
            [{"check": "top_k", "keep_in": ["sky"], "keep_out": ["sky"]}],
            r"field 'checks\[0\]': 'sky' is in both keep_in and keep_out",
        ),
        ([{"check": "top_k", "k": 3}], r"field 'checks\[0\]': keep_in and keep_out name no class"),
        (
            [{"check": "top_k", "k": 0, "keep_in": ["road"]}],
            r"field 'checks\[0\].k' is 0; it must lie in \[1, ∞\]",
        ),
        (
            [{"check": "spearman", "floor": 1.5}],
            r"field 'checks\[0\].floor' is 1.5; it must lie in \[-1, 1\]",
        ),
        (
            [{"check": "verdict", "name": "a"}, {"check": "spearman", "floor": 0.1, "name": "a"}],
            r"two checks are named 'a'",
        ),
        (["verdict"], r"field 'checks\[0\]' should be dict"),
        ([], r"p.yaml: field 'checks' names no check"),
    ],
)
def test_a_bad_check_entry_is_refused_naming_the_file_and_field(checks: list[Any], match: str) -> None:
    _refused({"checks": checks}, match)


@pytest.mark.parametrize(
    ("top", "match"),
    [
        ({"inconclusive": "maybe"}, r"p.yaml: field 'inconclusive' is 'maybe'; valid: pass, fail"),
        ({"alpha": 1.0}, r"p.yaml: field 'alpha' is 1.0; it must lie in \(0, 1\)"),
        ({"resamples": 0}, r"p.yaml: field 'resamples' is 0; it must lie in \[1, ∞\]"),
        ({"sed": 1}, r"p.yaml: unknown field 'sed'; valid fields: checks, alpha"),
    ],
)
def test_a_bad_top_level_field_is_refused_naming_it(top: dict[str, Any], match: str) -> None:
    _refused({"checks": [{"check": "verdict"}], **top}, match)


def test_a_file_that_is_not_a_mapping_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"policy.yaml: the top level must be a mapping"):
        load_policy(_policy(tmp_path, "- check: verdict\n"))
    with pytest.raises(SpecError, match=r"missing.yaml: cannot read"):
        load_policy(tmp_path / "missing.yaml")


def test_names_the_baseline_lacks_are_refused_at_gate_time(tmp_path: Path) -> None:
    base = write_results(tmp_path / "base")
    cases = [
        (
            {"check": "top_k", "keep_out": ["train"]},
            r"field 'checks\[0\].keep_out' names class 'train', which the baseline does not hold; valid: building, car, road, sky, vegetation",
        ),
        (
            {"check": "verdict", "models": ["pilotnet"]},
            r"field 'checks\[0\].models' names model 'pilotnet'.*valid: vit",
        ),
        (
            {"check": "verdict", "methods": ["gradcan"]},
            r"field 'checks\[0\].methods' names method 'gradcan'.*valid: gradcam, gradrollout",
        ),
    ]
    for entry, match in cases:
        policy = policy_from_dict({"checks": [entry]}, "p.yaml")
        with pytest.raises(PolicyMismatchError, match=r"p.yaml: " + match):
            gate(base, base, policy)
    assert issubclass(PolicyMismatchError, GradSUMError)


def test_a_builtin_name_is_not_shadowed_by_a_folder_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `gradsum gate results/default ... --policy default` run from `results/`: the folder is no policy file
    (tmp_path / "default").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_policy("default").source.endswith("gradsum/gate/policies/default.yaml")
