"""A model ready for attribution and evaluation: module, card, task and input size together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradsum.errors import ModelOutputError
from gradsum.models.outputs import output_values


def check_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """`values` unchanged when every entry is finite; otherwise `ModelOutputError` naming `what`."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        kinds = sorted({"nan" if torch.isnan(v) else "inf" for v in values[bad][:64].cpu()})
        raise ModelOutputError(
            f"{what}: {int(bad.sum())} of {values.numel()} values are not finite "
            f"({'/'.join(kinds)}; first at index {first[0] if len(first) == 1 else first})"
        )
    return values


@dataclass
class LoadedModel:
    """A model ready for attribution, with its card and the task it was trained for."""

    name: str
    module: nn.Module
    card: dict[str, Any]
    task: str
    img_size: tuple[int, int]

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """(B,) outputs for a model-input batch: the steering value or the obstacle logit.

        Non-finite outputs raise `ModelOutputError` naming the model: nothing downstream means anything then.
        """
        was_training = self.module.training
        self.module.eval()
        try:
            values = output_values(self.module(batch)).float()
        finally:
            self.module.train(was_training)
        return check_finite(values, f"model {self.name!r}: output")
