"""The steering models of a run as series: what each model's card says about its shortcut strength
(rho), its series (the spec it was trained from) and, for a fine-tuned model, its base."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gradsum.evaluation.checks.shortcut.tables import TASK, number
from gradsum.models.loaded import LoadedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeriesMember:
    """What a steering model's card says about its place in a series."""

    name: str
    series: str
    #: the shortcut strength of its training set (NaN: unknown)
    rho: float
    finetuned: bool
    #: the run's model it was fine-tuned from ("" when none is in the run)
    base: str
    #: the fine-tuning seed (NaN for a model trained from scratch)
    seed: float

    @property
    def agreement(self) -> float:
        """The probability that the tint agrees with the steering sign in its training distribution."""
        return self.rho if self.rho > 0 else 0.5 if self.rho == 0 else math.nan


def _card_rho(card: Mapping[str, Any]) -> float:
    """card["truthset"]["parameters"]["shortcut"]; NaN where the card records none."""
    value: Any = card
    for key in ("truthset", "parameters", "shortcut"):
        value = value.get(key) if isinstance(value, Mapping) else None
    return number(value)


def series_members(models: Sequence[LoadedModel]) -> dict[str, SeriesMember]:
    """Model name → series, rho, fine-tuning and base of every steering model, from the cards."""
    by_checksum = {str(m.card["weights_sha256"]): m.name for m in models if m.card.get("weights_sha256")}
    described = {}
    for model in models:
        if model.task != TASK:
            continue
        finetune = model.card.get("finetune") or {}
        spec = model.card.get("spec") or {}
        described[model.name] = SeriesMember(
            name=model.name,
            series=str(spec.get("name", "")),
            rho=_card_rho(model.card),
            finetuned=bool(finetune),
            base=by_checksum.get(str(finetune.get("base_weights_sha256", "")), "") if finetune else "",
            seed=number(finetune.get("seed")),
        )
    return described


def fair_models(described: Mapping[str, SeriesMember]) -> dict[str, str | None]:
    """Series → its fair model: the one trained from scratch at rho 0 (the first, if several; None: none)."""
    fairs: dict[str, str | None] = {}
    for series in dict.fromkeys(m.series for m in described.values()):
        fair = [m.name for m in described.values() if m.series == series and not m.finetuned and m.rho == 0]
        if len(fair) > 1:
            log.warning(
                "shortcut: series %s has several rho-0 models %s; %s is its fair model", series, fair, fair[0]
            )
        fairs[series] = fair[0] if fair else None
    return fairs
