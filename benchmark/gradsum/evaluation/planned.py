"""What a run plans for each model: the attribution methods, known-answer controls and null explainers it
computes, each with its role in the verdicts. The bottom of the evaluation package: the checks, the
null explainers and the controls all read it, and it reads none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradsum.attribution.normalise import DEFAULT_NORMALISER
from gradsum.errors import UnknownNameError

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
    """One attribution method as a run configures it: the `methods` entry of a run config, and what the
    checks call `attribute` with for each model (the pipeline fills in the run's normalisation). The one
    type for a configured method, from the config file to the trust table."""

    method: str
    #: the name this method's profiles carry in the results (default: the method name; see `name`)
    label: str | None = None
    #: model names to run on (None: every model the method applies to)
    models: tuple[str, ...] | None = None
    layer: str | None = None
    #: this method's map normalisation (None: the run's `normalise`)
    normalise: str | None = None
    #: post-processing steps on the method's grid, e.g. `[abs]` (None: the method's own, e.g. relu for CAMs)
    postprocess: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: the method's role in the verdicts (`ROLES`): null explainers (`gradsum.evaluation.nulls`) and
    #: known-answer controls (`gradsum.evaluation.controls`) are computed beside the methods under test
    role: str = METHOD

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise UnknownNameError(
                f"method {self.name!r}: unknown role {self.role!r}; valid: {', '.join(ROLES)}"
            )

    @property
    def name(self) -> str:
        """The label used in results tables."""
        return self.label or self.method

    @property
    def normalisation(self) -> str:
        """The map normalisation this method runs with: its own, else the default."""
        return self.normalise or DEFAULT_NORMALISER

    @property
    def null(self) -> bool:
        """A null explainer: it knows nothing of the model (chance, confound or heuristic)."""
        return self.role in NULL_ROLES

    @property
    def model_free(self) -> bool:
        """Its maps are no function of the model's weights (nulls and controls): randomising the model
        cannot change them, so the sanity check leaves them out."""
        return self.role != METHOD
