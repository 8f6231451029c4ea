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
from gradsum.attribution.attention_capture import captured_heads, to_token_grid
from gradsum.attribution.attention_math import HeadTensors, propagate_row
from gradsum.attribution.base import upsample
from gradsum.attribution.normalise import DEFAULT_NORMALISER, normalise
from gradsum.contract import ATTENTION, ATTENTION_PROFILES
from gradsum.models import num_prefix_tokens


def row_entropy(attention: Tensor) -> Tensor:
    """Each row's entropy, (B, heads, rows, N) → (B, heads, rows)."""
    return -(attention * attention.clamp_min(1e-12).log()).sum(-1)


def head_mean_row(heads: HeadTensors, weights: Tensor) -> Tensor:
    """The read-out row (B, N) of a block's head-mean attention, formed a chunk of rows at a time."""
    return propagate_row(weights, lambda rows: heads.attention(rows).mean(1), heads.chunks())


def entropy_ratio_of(heads: HeadTensors) -> Tensor:
    """Mean row entropy per head relative to a uniform row's, (B, heads), the attention formed a chunk of
    query rows at a time."""
    tokens = heads.key.shape[-2]
    total = sum(row_entropy(heads.attention(rows)).sum(-1) for rows in heads.chunks())
    assert isinstance(total, Tensor)  # a block has at least one row
    return total / (tokens * math.log(tokens))


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
        """Add one batch: images as the model takes them, labels as Cityscapes ids.

        Each block's attention is re-formed from its captured queries and keys a chunk of rows at a time
        (`attention_math.HeadTensors`), so the forward stays on timm's fused kernel and no block's N×N
        attention is whole in memory: at a 1024×2048 frame one block's would be 0.8 GB.
        """
        with attribution_mode(module), torch.no_grad():
            capture = captured_heads(module, images, range(len(module.blocks)), None)  # type: ignore[arg-type]
        prefix = num_prefix_tokens(module)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        ratios = []
        for index in sorted(capture.heads):
            heads = capture.heads.pop(index)
            ratios.append(entropy_ratio_of(heads).sum(0))
            row = head_mean_row(heads, capture.weights)
            maps = normalise(upsample(to_token_grid(module, row[:, prefix:]), size), self.normalisation)
            scores = class_scores(maps, labels, resolution=resolution)
            self._frames.append(per_image_frame(scores, ids, self.model, f"layer {index}"))
        stacked = torch.stack(ratios)
        self._entropy_sum = stacked if self._entropy_sum is None else self._entropy_sum + stacked
        self._images += images.shape[0]
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
