"""Gate policies: a small YAML file of checks, validated like every other GradSUM config.

    # what this policy guards
    alpha: 0.05          # two-sided; intervals are 1 - alpha
    resamples: 1000      # image bootstrap
    seed: 0
    inconclusive: pass   # how an inconclusive outcome counts for the exit code: pass | fail
    checks:
      - {check: class_shift, statistic: mass_share, tolerance: 0.05}
      - {check: top_k, k: 3, keep_in: [road], keep_out: [sky], models: [vit]}

Every entry names a check of `GATE_CHECKS` and that check's options; it may also carry `models` and
`methods` (which baseline models and methods it covers; default: all both runs hold) and `name` (its test
case's name; default the check's, numbered from the second entry of a kind). Everything that can be known
from the file alone is refused when it is loaded (an unknown check, option, class or value), naming the
file and the field; the models, methods and classes a baseline holds are checked when it is gated.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradsum.dataspec import build, load_yaml, shipped
from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation.verdicts import PASS
from gradsum.gate.checks import GATE_CHECKS, GateCheck
from gradsum.gate.outcome import COUNTS_AS
from gradsum.registry import Registry
from gradsum.truthsets.labels import CITYSCAPES

#: The classes a profile can hold, by name: Cityscapes classes that are not void or ignored.
PROFILE_CLASSES: Registry[int] = Registry("class")
for _info in CITYSCAPES.classes:
    if not _info.ignore:
        PROFILE_CLASSES.add(_info.name, _info.id)


@dataclass(frozen=True)
class PolicyFile:
    """The top level of a policy file, as `dataspec.build` checks it."""

    checks: list[dict[str, Any]]
    alpha: float = 0.05
    resamples: int = 1000
    seed: int = 0
    inconclusive: str = PASS
    #: why each number was chosen, by field (`checks[0].tolerance`), as `gradsum gate --calibrate` writes it
    calibration: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """The fields every check entry may carry besides its check's options."""

    check: str
    name: str | None = None
    models: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None


#: The entry fields that are not a check's options.
ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))


@dataclass(frozen=True)
class CheckSpec:
    """One check of a policy: its test-case name, the check, its built options and its selectors, and
    where it sits in the file (`checks[2]`) for messages."""

    name: str
    check: str
    options: Any
    where: str
    models: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None

    @property
    def gate_check(self) -> GateCheck:
        """The registered check."""
        return GATE_CHECKS.get(self.check)


@dataclass(frozen=True)
class Policy:
    """A validated policy; `source` names its file (or built-in name) in every message."""

    checks: tuple[CheckSpec, ...]
    source: str
    alpha: float = 0.05
    resamples: int = 1000
    seed: int = 0
    inconclusive: str = PASS
    calibration: dict[str, str] = field(default_factory=dict)


#: Policies shipped by name (`gradsum/gate/policies/*.yaml`): a starting point, to be calibrated
#: (`gradsum gate --calibrate`).
BUILTIN_POLICIES: Registry[Path] = shipped(Path(__file__).parent / "policies", "built-in policy")


def load_policy(policy: str | os.PathLike[str]) -> Policy:
    """The policy in the YAML file `policy`, or the built-in one of that name (`BUILTIN_POLICIES`)."""
    path = Path(policy)
    if isinstance(policy, str) and not path.is_file() and path.suffix not in (".yaml", ".yml"):
        if policy not in BUILTIN_POLICIES:
            raise SpecError(f"{policy}: no such policy file, and {BUILTIN_POLICIES.unknown_message(policy)}")
        path = BUILTIN_POLICIES.get(policy)
    return policy_from_dict(load_yaml(path), str(path))


def policy_from_dict(data: Mapping[str, Any], source: str) -> Policy:
    """Validate policy `data`; every error names `source` and the field."""
    top = build(PolicyFile, dict(data), source)
    _check_range(top.alpha, (0.0, 1.0), source, "alpha", strict=True)
    _check_range(top.resamples, (1, None), source, "resamples")
    if top.inconclusive not in COUNTS_AS:
        raise SpecError(
            f"{source}: field 'inconclusive' is {top.inconclusive!r}; valid: {', '.join(COUNTS_AS)}"
        )
    if not top.checks:
        raise SpecError(f"{source}: field 'checks' names no check")
    specs = tuple(_spec(entry, index, source) for index, entry in enumerate(top.checks))
    return Policy(
        checks=_named(specs, source),
        source=source,
        alpha=top.alpha,
        resamples=top.resamples,
        seed=top.seed,
        inconclusive=top.inconclusive,
        calibration=top.calibration,
    )


def _spec(data: dict[str, Any], index: int, source: str) -> CheckSpec:
    where = f"checks[{index}]"
    common = {k: v for k, v in data.items() if k in ENTRY_FIELDS}
    entry = build(Entry, common, source, f"{where}.")
    if entry.check not in GATE_CHECKS:
        raise SpecError(f"{source}: field '{where}.check': {GATE_CHECKS.unknown_message(entry.check)}")
    check = GATE_CHECKS.get(entry.check)
    rest = {k: v for k, v in data.items() if k not in ENTRY_FIELDS}
    options: Any = build(check.Options, rest, source, f"{where}.")
    _check_options(check, options, source, where)
    return CheckSpec(entry.name or "", entry.check, options, where, entry.models, entry.methods)


def _check_options(check: GateCheck, options: Any, source: str, where: str) -> None:
    for name, valid in check.choices.items():
        value = getattr(options, name)
        if value not in valid:
            raise SpecError(f"{source}: field '{where}.{name}' is {value!r}; valid: {', '.join(valid)}")
    for name, bounds in check.bounds.items():
        _check_range(getattr(options, name), bounds, source, f"{where}.{name}")
    for name in check.class_fields:
        for position, value in enumerate(getattr(options, name) or ()):
            if value not in PROFILE_CLASSES:
                raise SpecError(
                    f"{source}: field '{where}.{name}[{position}]': {PROFILE_CLASSES.unknown_message(value)}"
                )
    named = [set(getattr(options, name) or ()) for name in check.class_fields]
    if check.class_fields == ("keep_in", "keep_out"):
        both = sorted(named[0] & named[1])
        if both:
            raise SpecError(f"{source}: field '{where}': {both[0]!r} is in both keep_in and keep_out")
        if not (named[0] or named[1]):
            raise SpecError(f"{source}: field '{where}': keep_in and keep_out name no class")


def _check_range(
    value: float, bounds: tuple[float | None, float | None], source: str, name: str, strict: bool = False
) -> None:
    low, high = bounds
    below = low is not None and (value <= low if strict else value < low)
    above = high is not None and (value >= high if strict else value > high)
    if below or above:
        brackets = "()" if strict else "[]"
        shown = f"{brackets[0]}{_bound(low)}, {_bound(high)}{brackets[1]}"
        raise SpecError(f"{source}: field '{name}' is {value!r}; it must lie in {shown}")


def _bound(value: float | None) -> str:
    return "∞" if value is None else f"{value:g}"


def _named(specs: tuple[CheckSpec, ...], source: str) -> tuple[CheckSpec, ...]:
    """Specs with their test-case names: given ones must be unique; default ones are the check's name,
    numbered from the second entry of a kind (class_shift, class_shift_2)."""
    given = [s.name for s in specs if s.name]
    repeated = sorted({n for n in given if given.count(n) > 1})
    if repeated:
        raise SpecError(f"{source}: two checks are named {repeated[0]!r}; names must be unique")
    taken, named = set(given), []
    for spec in specs:
        name, number = spec.name or spec.check, 1
        while not spec.name and name in taken:
            number += 1
            name = f"{spec.check}_{number}"
        taken.add(name)
        named.append(dataclasses.replace(spec, name=name))
    return tuple(named)


def check_against(
    policy: Policy, classes: Collection[str], models: Collection[str], methods: Collection[str]
) -> None:
    """Refuse a policy that names a class, model or method the baseline does not hold, naming the policy
    file and field and listing the baseline's."""
    for spec in policy.checks:
        check = spec.gate_check
        for name in check.class_fields:
            _known(getattr(spec.options, name) or (), classes, "class", policy.source, f"{spec.where}.{name}")
        _known(spec.models or (), models, "model", policy.source, f"{spec.where}.models")
        _known(spec.methods or (), methods, "method", policy.source, f"{spec.where}.methods")


def _known(named: Collection[str], valid: Collection[str], what: str, source: str, where: str) -> None:
    unknown = [n for n in named if n not in valid]
    if unknown:
        raise PolicyMismatchError(
            f"{source}: field '{where}' names {what} {unknown[0]!r}, which the baseline does not hold; "
            f"valid: {', '.join(sorted(valid))}"
        )


class PolicyMismatchError(GradSUMError):
    """A policy names a class, model or method the baseline it is applied to does not hold."""
