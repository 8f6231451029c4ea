"""What a run plans for each model: the attribution methods, known-answer controls and null explainers it
computes, each with its role in the verdicts. The bottom of the evaluation package: the checks, the
null explainers and the controls all read it, and it reads none of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: A method's role in the verdicts. `method`: an attribution method under test. `control`: a known-answer
#: explainer (an oracle built from the referee, or one deliberately mismatched to another model, task or
#: image): judged like a method, never recommended. The null explainers' roles: `chance` (they know
#: nothing: random, uniform) and `confound` (they know what the metric may reward without any model:
#: class area, position) gate every verdict; `heuristic` (an edge detector) is a column of its own, "adds
#: over an edge detector", and gates nothing.
METHOD, CONTROL, CHANCE, CONFOUND, HEURISTIC = "method", "control", "chance", "confound", "heuristic"
ROLES = (METHOD, CONTROL, CHANCE, CONFOUND, HEURISTIC)
NULL_ROLES = (CHANCE, CONFOUND, HEURISTIC)
#: The null roles a method must beat to pass.
GATING_ROLES = (CHANCE, CONFOUND)


@dataclass(frozen=True)
class PlannedMethod:
    """One attribution method as a run configures it for a model (what `attribute` is called with)."""

    label: str
    method: str
    layer: str | None = None
    normalise: str = "minmax"
    options: Mapping[str, Any] = field(default_factory=dict)
    #: post-processing steps on the method's grid (None: the method's default)
    postprocess: tuple[str, ...] | None = None
    #: the method's role in the verdicts (`ROLES`): null explainers (`gradsum.evaluation.nulls`) and
    #: known-answer controls (`gradsum.evaluation.controls`) are computed beside the methods under test
    role: str = METHOD

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(
                f"PlannedMethod {self.label!r}: role={self.role!r} unknown; valid: {', '.join(ROLES)}"
            )

    @property
    def null(self) -> bool:
        """A null explainer: it knows nothing of the model (chance, confound or heuristic)."""
        return self.role in NULL_ROLES

    @property
    def model_free(self) -> bool:
        """Its maps are no function of the model's weights (nulls and controls): randomising the model
        cannot change them, so the sanity check leaves them out."""
        return self.role != METHOD
