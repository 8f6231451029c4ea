"""Attention diagnostics for ViTs: how far from uniform each head attends, and what each layer reads.

The GradSUM talk found ViT attention close to uniform and suspected the tokenizer CNN does the heavy
lifting; these tables let a reader check that claim: per layer and head, the entropy of the attention
rows relative to a uniform row (1 = uniform), and per layer, the raw attention's class profile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor, nn

from gradsum.aggregation import class_scores, per_image_frame, profiles
from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.attention_capture import (
    forward_capturing,
    pooled_tokens,
    readout_weights,
    to_token_grid,
)
from gradsum.attribution.attention_math import read_out
from gradsum.attribution.base import upsample
from gradsum.attribution.normalise import DEFAULT_NORMALISER, normalise
from gradsum.contract import ATTENTION, ATTENTION_PROFILES
from gradsum.models import num_prefix_tokens


def entropy_ratio(attention: Tensor) -> Tensor:
    """Mean row entropy per head relative to a uniform row, (B, heads, N, N) → (B, heads)."""
    tokens = attention.shape[-1]
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1)
    return entropy.mean(-1) / math.log(tokens)


@dataclass
class AttentionDiagnostics:
    """Accumulates entropy ratios and per-layer raw-attention class scores over batches of one model."""

    model: str
    normalisation: str = DEFAULT_NORMALISER
    batches: int = 0
    _entropy_sum: Tensor | None = None
    _images: int = 0
    _frames: list[pd.DataFrame] = field(default_factory=list)

    def update(
        self, module: nn.Module, images: Tensor, labels: Tensor, ids: list[str], resolution: str
    ) -> None:
        """Add one batch: images as the model takes them, labels as Cityscapes ids."""
        head_means: dict[int, Tensor] = {}
        ratios: dict[int, Tensor] = {}

        def keep(index: int, attention: Tensor) -> None:
            ratios[index] = entropy_ratio(attention).sum(0)
            head_means[index] = attention.mean(1)

        with (
            attribution_mode(module, needs_attention=True),
            torch.no_grad(),
            pooled_tokens(module) as pooled,
        ):
            forward_capturing(module, images, range(len(module.blocks)), keep)  # type: ignore[arg-type]
        weights, prefix = readout_weights(module, pooled), num_prefix_tokens(module)
        stacked = torch.stack([ratios[i] for i in sorted(ratios)])
        self._entropy_sum = stacked if self._entropy_sum is None else self._entropy_sum + stacked
        self._images += images.shape[0]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        for index in sorted(head_means):
            grid = to_token_grid(module, read_out(head_means[index], weights, prefix))
            maps = normalise(upsample(grid, size), self.normalisation)
            scores = class_scores(maps, labels, resolution=resolution)
            self._frames.append(per_image_frame(scores, ids, self.model, f"layer {index}"))
        self.batches += 1

    def shard_tables(self) -> dict[str, pd.DataFrame]:
        """What the batches since the last call add, as tables a shard stores, and start afresh.

        `attention_rows`: per-image raw-attention class scores per layer; `attention_entropy`: entropy
        sums per layer and head with the image count, so ratios over many shards are exact means.
        """
        rows = (
            pd.concat(self._frames, ignore_index=True)
            if self._frames
            else pd.DataFrame(columns=list(PER_IMAGE_COLUMNS))
        )
        sums = []
        if self._entropy_sum is not None:
            total = self._entropy_sum.double().cpu()
            sums = [
                {
                    "model": self.model,
                    "layer": layer,
                    "head": head,
                    "entropy_sum": float(total[layer, head]),
                    "images": self._images,
                }
                for layer in range(total.shape[0])
                for head in range(total.shape[1])
            ]
        self._entropy_sum, self._images, self._frames = None, 0, []
        return {
            ATTENTION_ROWS: rows,
            ATTENTION_ENTROPY: pd.DataFrame(sums, columns=list(_ENTROPY_SUM_COLUMNS)),
        }


#: Names of the shard tables `AttentionDiagnostics.shard_tables` returns.
ATTENTION_ROWS = "attention_rows"
ATTENTION_ENTROPY = "attention_entropy"
_ENTROPY_SUM_COLUMNS = ("model", "layer", "head", "entropy_sum", "images")


def entropy_table(sums: pd.DataFrame) -> pd.DataFrame:
    """`model, layer, head, entropy_ratio` averaged over every image and query token of the shards."""
    if sums.empty:
        return pd.DataFrame(columns=list(ATTENTION.names))
    total = sums.groupby(["model", "layer", "head"], sort=True)[["entropy_sum", "images"]].sum().reset_index()
    total["entropy_ratio"] = total["entropy_sum"] / total["images"]
    return total[list(ATTENTION.names)]


def layer_profile_table(rows: pd.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """`model, layer, class, class_id, score_mean, score_ci_low, score_ci_high, n_images` per layer."""
    table = profiles(rows, n_resamples=n_resamples, seed=seed)
    table = table.rename(columns={"method": "layer"})
    table["layer"] = table["layer"].str.removeprefix("layer ").astype(int)
    return table[list(ATTENTION_PROFILES.names)].sort_values(
        ["model", "layer", "class_id"], ignore_index=True
    )
