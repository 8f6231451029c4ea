"""A model ready for attribution and evaluation: module, card, task and input size together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradsum.attribution.targets import output_values


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
        """(B,) outputs for a model-input batch: the steering value or the obstacle logit."""
        was_training = self.module.training
        self.module.eval()
        try:
            return output_values(self.module(batch)).float()
        finally:
            self.module.train(was_training)
