"""Granularity sweep: does a finer layer recover the small causes the last layer cannot see?

GradCAM (and LayerCAM, HiResCAM) at every CNN stage, every ViT block and every stage of a hybrid's
tokenizer: per layer, the agreement of the class profile with the causal profile and the share of the
map on the cause mask (the obstacle instance; the ego-lane road for steering), against depth and grid
size. The sweep informs the choice of layer; it gives no verdict of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradsum.aggregation import class_scores, per_image_frame
from gradsum.aggregation.profiles import mean_ci
from gradsum.attribution import attribute
from gradsum.attribution.base import upsample
from gradsum.errors import GradSUMError
from gradsum.evaluation.agreement import agreement_table
from gradsum.evaluation.base import CheckResult, EvaluationContext, TrustCheck, check_table, register_check
from gradsum.evaluation.mask_metrics import mass_accuracy
from gradsum.evaluation.referee import cached_causal_effects, causal_filler
from gradsum.models import model_family, tokenizer
from gradsum.models.loaded import LoadedModel
from gradsum.taxonomy import FamilyRegistry

#: Columns of `granularity.csv`, in order.
GRANULARITY_COLUMNS = (
    "model",
    "method",
    "layer",
    "depth",
    "grid",
    "cell_pixels",
    "agreement",
    "agreement_ci_low",
    "agreement_ci_high",
    "cause_mass",
    "cause_mass_ci_low",
    "cause_mass_ci_high",
    "cause_area",
    "cause_lift",
    "n_images",
)
#: The CAM methods swept when the options name none.
DEFAULT_METHODS = ("gradcam", "layercam", "hirescam")


def _conv_stages(root: nn.Module, prefix: str) -> list[str]:
    """Paths of the modules holding a Conv2d directly, in definition order (one per conv stage)."""
    paths = []
    for name, module in root.named_modules():
        if any(isinstance(child, nn.Conv2d) for child in module.children()):
            paths.append(f"{prefix}{name}" if name else prefix.rstrip("."))
    return paths


def _block_inputs(model: nn.Module) -> list[str]:
    # a block's input norm: the tokens each block reads (the last block's output feeds only the readout)
    blocks = model.blocks
    assert isinstance(blocks, nn.Sequential)
    return [f"blocks.{i}.norm1" for i in range(len(blocks))]


def _tokenizer_path(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is tokenizer(model):
            return name
    raise GradSUMError(f"granularity: {type(model).__name__} has no tokenizer")


#: model family → the swept layers, shallow to deep
LAYERS: FamilyRegistry[Callable[[nn.Module], list[str]]] = FamilyRegistry("granularity layer family")
LAYERS.add(
    "cnn",
    lambda model: _conv_stages(
        getattr(model, "features", model), "features." if hasattr(model, "features") else ""
    ),
)
LAYERS.add("vit", _block_inputs)
LAYERS.add(
    "hybrid",
    lambda model: _conv_stages(tokenizer(model), f"{_tokenizer_path(model)}.") + _block_inputs(model),
)


@dataclass(frozen=True)
class GranularityOptions:
    """The check's options (run config `evaluation.options.granularity`): the CAM methods to sweep."""

    methods: tuple[str, ...] = DEFAULT_METHODS


@dataclass
class _Layer:
    model: LoadedModel
    method: str
    layer: str
    depth: int
    grid: tuple[int, int] = (0, 0)
    frames: list[pd.DataFrame] = dataclasses.field(default_factory=list)
    mass: list[float] = dataclasses.field(default_factory=list)
    area: list[float] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method}@{self.layer}"


def _sweep(context: EvaluationContext, options: GranularityOptions) -> list[_Layer]:
    layers = [
        _Layer(model, method, layer, depth)
        for model in context.models
        for method in options.methods
        for depth, layer in enumerate(LAYERS.get(model_family(model.module), "model family")(model.module))
    ]
    for ids, images, labels, chunk in context.batches():
        label_tensor = torch.from_numpy(np.stack(labels).astype(np.int64)).to(context.device)
        for model in context.models:
            batch = context.model_input(model, images)
            masks = [context.truthset.cause_mask(i, model.task) for i in chunk]
            for item in (entry for entry in layers if entry.model is model):
                result = attribute(
                    model.module,
                    batch,
                    item.method,
                    target=context.targets.get(model.task),
                    task=model.task,
                    layer=item.layer,
                )
                item.grid = (int(result.grid.shape[-2]), int(result.grid.shape[-1]))
                maps = result.maps.detach()
                scores = class_scores(maps, label_tensor, resolution=context.resolution)
                item.frames.append(per_image_frame(scores, ids, model.name, item.label))
                _add_cause_mass(item, maps.float().cpu(), masks)
    return layers


def _add_cause_mass(item: _Layer, maps: torch.Tensor, masks: list[np.ndarray | None]) -> None:
    for row, mask in enumerate(masks):
        if mask is None:
            continue
        target = torch.from_numpy(np.asarray(mask, dtype=bool))[None]
        resized = upsample(maps[row : row + 1], (int(target.shape[-2]), int(target.shape[-1])))
        item.mass.append(float(mass_accuracy(resized, target)[0]))
        item.area.append(float(target.float().mean()))


def granularity_table(context: EvaluationContext, options: GranularityOptions) -> pd.DataFrame:
    """One row per model × method × layer: causal agreement and mass on the cause, with CIs."""
    layers = _sweep(context, options)
    effects = cached_causal_effects(context, causal_filler(context))
    rows = []
    rng = np.random.default_rng(context.seed)
    for item in layers:
        agreement = agreement_table(
            pd.concat(item.frames, ignore_index=True),
            effects,
            context.truthset.causes,
            context.n_resamples,
            context.seed,
        )
        found = agreement.iloc[0] if not agreement.empty else None
        mass, mass_low, mass_high = mean_ci(np.asarray(item.mass, dtype=float), rng, context.n_resamples)
        area = float(np.mean(item.area)) if item.area else float("nan")
        height = item.model.img_size[0]
        rows.append(
            {
                "model": item.model.name,
                "method": item.method,
                "layer": item.layer,
                "depth": item.depth,
                "grid": f"{item.grid[0]}x{item.grid[1]}",
                "cell_pixels": round(height / max(item.grid[0], 1), 2),
                "agreement": np.nan if found is None else found["spearman"],
                "agreement_ci_low": np.nan if found is None else found["spearman_ci_low"],
                "agreement_ci_high": np.nan if found is None else found["spearman_ci_high"],
                "cause_mass": mass,
                "cause_mass_ci_low": mass_low,
                "cause_mass_ci_high": mass_high,
                "cause_area": area,
                "cause_lift": mass / area if area > 0 else float("nan"),
                "n_images": len(item.mass),
            }
        )
    return pd.DataFrame(rows, columns=list(GRANULARITY_COLUMNS))


GRANULARITY_TABLE = check_table(
    "granularity", GRANULARITY_COLUMNS, text=("layer", "grid"), ints=("depth", "n_images")
)


@register_check("granularity")
class GranularityCheck(TrustCheck):
    """GradCAM-family maps at every depth: agreement and cause mass against depth and grid size."""

    Options = GranularityOptions
    tables = (GRANULARITY_TABLE,)
    description = "CAM methods at every CNN stage and ViT block: agreement and cause mass against depth"

    def evaluate(self, context: EvaluationContext, options: GranularityOptions) -> CheckResult:
        """Table granularity; no summary (the sweep informs the choice of layer, it judges nothing)."""
        table = granularity_table(context, options)
        return CheckResult(
            tables={GRANULARITY_TABLE.name: table}, summary=pd.DataFrame(columns=["model", "method"])
        )
