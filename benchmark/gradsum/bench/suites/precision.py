"""Half precision against fp32: how far each method's maps and class profiles move, and what it saves in time.

For each model of the default run (trained checkpoints from the models folder where they exist, else the
shipped spec with seeded random weights, said so in the JSON) and each registered method that applies to
it, the same rendered synthetic scenes are attributed in fp32 (the oracle) and in every half precision
the device runs (`gradsum.attribution.precision`; bf16 on a CPU, bf16 and fp16 on CUDA):

- the Spearman correlation of the two maps (signed ranks of the min–max maps, `SIMILARITIES["spearman"]`),
  per image, then its median and minimum over the images;
- the largest absolute difference between the two class profiles (per class, the mean over the images of
  the GradSUM score: the map's sum over the class's pixels ÷ their count), on the scenes' own labels;
- the time of one call in the half precision ÷ its time in fp32 (fewest seconds over the repeats, the
  precisions taking turns).

A method that refuses half precision gets the row "refused: <reason>"; one that fails in fp32 itself is
reported as such. `targets` holds the issue's bar: a median Spearman ≥ 0.99 for the CAM and attention
(rollout) methods, and which model × method rows miss it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.precision import DEFAULT_PRECISION, precisions_for
from gradsum.bench import BenchSuite
from gradsum.errors import GradSUMError
from gradsum.evaluation.similarity import SIMILARITIES, class_profile, image_class_scores
from gradsum.models import load_model, load_spec, model_family
from gradsum.models.checkpoints import CARD
from gradsum.models.inputs import model_input
from gradsum.truthsets.synthetic import render, sample_scene

#: the default run's models, one spec each (`gradsum/configs/default.yaml`)
MODELS = ("pilotnet", "vit", "hybrid_vit", "compact_cnn")
#: where trained checkpoints are looked for, `<folder>/<model>` (override with GRADSUM_BENCH_MODELS)
MODELS_DIR = "models"
#: the map similarity the suite reports (signed: a CAM's zeros and a signed map's sign both count)
SIMILARITY = "spearman"
#: the issue's bar for bf16 maps, judged on the median over images
TARGET_SPEARMAN = 0.99
#: method families (the module in `gradsum.attribution.methods` a method lives in) the bar applies to
TARGET_FAMILIES = ("cam", "fastcam", "attention")
#: seed of the rendered scenes and of untrained models' weights
SEED = 0


@dataclass(frozen=True)
class Scale:
    """How much the suite runs: models, images per batch, timed repeats, and the methods (None: all)."""

    models: tuple[str, ...]
    images: int
    repeats: int
    methods: tuple[str, ...] | None = None


FULL = Scale(models=MODELS, images=4, repeats=2)
#: a CNN and a ViT, a CAM, the attention methods, a gradient baseline and a refused LRP method
QUICK = Scale(
    models=("pilotnet", "vit"),
    images=2,
    repeats=1,
    methods=("gradcam", "rollout", "gradrollout", "saliency", "lrp_epsilon_plus", "attnlrp"),
)


#: the package whose modules name the method families
METHODS_PACKAGE = "gradsum.attribution.methods."


def family_of(method: str) -> str:
    """The method's family: the module of `gradsum.attribution.methods` that defines it or its base (classes
    made with `type()` carry no module of their own); a method from elsewhere is its own module."""
    cls = METHODS.get(method)
    modules = [k.__module__ for k in cls.__mro__ if k.__module__.startswith(METHODS_PACKAGE)]
    return (modules[0] if modules else cls.__module__).rsplit(".", 1)[-1]


def scenes(count: int, size: tuple[int, int]) -> tuple[list[np.ndarray], torch.Tensor]:
    """`count` rendered synthetic scenes at `size`: their uint8 frames and (B, H, W) Cityscapes label ids."""
    rng = np.random.default_rng(SEED)
    rendered = [render(sample_scene(rng, size)) for _ in range(count)]
    return [r.image for r in rendered], torch.from_numpy(np.stack([r.labels for r in rendered]))


@dataclass(frozen=True)
class SuiteModel:
    """A model the suite attributes: the module, its task and input size, and which weights it has."""

    module: nn.Module
    task: str
    size: tuple[int, int]
    weights: str


def suite_model(name: str, folder: Path, device: str) -> SuiteModel:
    """The model `name`: from its checkpoint `folder/name` when one loads, else the shipped spec with seeded
    random weights; `weights` says which."""
    checkpoint = folder / name
    reason = f"no checkpoint at {checkpoint}"
    if (checkpoint / CARD).is_file():
        try:
            model, card = load_model(checkpoint, device=device)
        except GradSUMError as error:
            reason = f"checkpoint at {checkpoint} not loaded: {error}"
        else:
            spec = card.model_spec()
            weights = f"checkpoint: {checkpoint} (weights sha256 {card.weights_sha256[:12]})"
            return SuiteModel(model, card.task, spec.img_size, weights)
    spec = load_spec(name)
    torch.manual_seed(SEED)
    model = spec.build().to(device).eval()
    weights = f"untrained: spec {name} with random weights (seed {SEED}); {reason}"
    return SuiteModel(model, spec.task, spec.img_size, weights)


def _timed(call: Callable[[], torch.Tensor], device: str) -> tuple[torch.Tensor, float]:
    """`call()` and its seconds (CUDA-synchronised)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = call()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def compare_maps(oracle: torch.Tensor, half: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Spearman of the maps per image (median, min) and the largest class-profile difference."""
    rho = SIMILARITIES.get(SIMILARITY)(oracle.cpu().numpy(), half.cpu().numpy())
    profiles = [class_profile(image_class_scores(maps, labels.to(maps.device))) for maps in (oracle, half)]
    return {
        "spearman_median": float(np.median(rho)),
        "spearman_min": float(np.min(rho)),
        "profile_max_abs_diff": float(np.nanmax(np.abs(profiles[0] - profiles[1]))),
    }


def method_row(
    model: SuiteModel, images: torch.Tensor, labels: torch.Tensor, method: str, device: str, repeats: int
) -> dict[str, Any] | str:
    """One method's figures against its fp32 maps in every half precision the device runs, or why none."""
    cls = METHODS.get(method)
    if cls.half_precision_refusal is not None:
        return f"refused: {cls.half_precision_refusal}"

    def run(precision: str) -> torch.Tensor:
        return attribute(model.module, images, method, task=model.task, precision=precision).maps

    halves = half_precisions(device)
    maps: dict[str, torch.Tensor] = {}
    seconds = dict.fromkeys([DEFAULT_PRECISION, *halves], float("inf"))
    # the precisions take turns, so that load on a shared machine falls on both alike; the first round's
    # calls are timed too (the fewest seconds win), which spares a warm-up round
    for _ in range(repeats):
        for precision in seconds:
            try:
                maps[precision], took = _timed(partial(run, precision), device)
            except GradSUMError as error:
                return f"failed in {precision}: {error}"
            seconds[precision] = min(seconds[precision], took)
    oracle = maps[DEFAULT_PRECISION]
    row: dict[str, Any] = {"family": family_of(method), f"{DEFAULT_PRECISION}_s": seconds[DEFAULT_PRECISION]}
    for precision in halves:
        row[precision] = compare_maps(oracle, maps[precision], labels) | {
            "seconds": seconds[precision],
            "time_ratio": seconds[precision] / seconds[DEFAULT_PRECISION],
        }
    return row


def half_precisions(device: str) -> list[str]:
    """The half precisions the device runs (every registered one but the fp32 oracle)."""
    return [name for name in precisions_for(torch.device(device).type) if name != DEFAULT_PRECISION]


def _targets(models: dict[str, Any], device: str) -> dict[str, Any]:
    """The bar and, per half precision, the model × method rows of the target families that miss it."""
    judged: dict[str, Any] = {
        "spearman_median_at_least": TARGET_SPEARMAN,
        "families": list(TARGET_FAMILIES),
        "judged_on": "the median over images of the per-image Spearman",
    }
    for precision in half_precisions(device):
        rows = [
            (model, method, row[precision]["spearman_median"])
            for model, figures in models.items()
            for method, row in figures["methods"].items()
            if isinstance(row, dict) and row["family"] in TARGET_FAMILIES
        ]
        judged[precision] = {
            "rows": len(rows),
            "met": sum(rho >= TARGET_SPEARMAN for _, _, rho in rows),
            "missed": [
                {"model": model, "method": method, "spearman_median": rho}
                for model, method, rho in rows
                if rho < TARGET_SPEARMAN
            ],
        }
    return judged


def run_scale(scale: Scale, device: str) -> dict[str, Any]:
    """The suite at `scale` on `device`."""
    folder = Path(os.environ.get("GRADSUM_BENCH_MODELS", MODELS_DIR))
    models: dict[str, Any] = {}
    for name in scale.models:
        model = suite_model(name, folder, device)
        family = model_family(model.module)
        frames, labels = scenes(scale.images, model.size)
        images = model_input(frames, model.size, device)
        chosen = scale.methods if scale.methods is not None else tuple(METHODS.names())
        methods = [m for m in chosen if family in METHODS.get(m).applies_to]
        models[name] = {
            "weights": model.weights,
            "family": family,
            "task": model.task,
            "methods": {m: method_row(model, images, labels, m, device, scale.repeats) for m in methods},
        }
    return {
        "oracle": DEFAULT_PRECISION,
        "precisions": half_precisions(device),
        "images": scale.images,
        "repeats": scale.repeats,
        "similarity": SIMILARITY,
        "profile": "per class, mean over images of the GradSUM score of the min-max map; max |half - fp32|",
        "time_ratio": "fewest seconds of one call in the half precision / in fp32",
        "models": models,
        "targets": _targets(models, device),
    }


def run(quick: bool, device: str) -> dict[str, Any]:
    """Quick: PilotNet and the ViT, six methods, two images; full: the default models, every method."""
    return run_scale(QUICK if quick else FULL, device)


SUITE = BenchSuite(
    "precision",
    "bf16 (and fp16 on CUDA) maps and class profiles against fp32 per method: Spearman, profile gap, time",
    run,
)
