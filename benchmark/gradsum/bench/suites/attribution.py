"""Attribution speed and memory: fast GradCAM vs inference and vs pytorch-grad-cam, rollout, RSS drift."""

from __future__ import annotations

import gc
from functools import partial
from typing import Any

import psutil
import torch
from torch import nn

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.adapters import attribution_mode, to_grid
from gradsum.attribution.cam import SignedOutput
from gradsum.attribution.layers import modules_of, resolve_layer
from gradsum.bench import BenchSuite, timeit
from gradsum.models import build_model

SIZE = (96, 192)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "pilotnet": ("pilotnet", {}),
    "resnet18": ("timm_cnn", {}),
    "vit": ("vit", {}),
}


def _library_gradcam(model: nn.Module, images: torch.Tensor) -> None:
    # the library itself, given ready-made per-sample targets, so the ratio does not count our sign forward
    from pytorch_grad_cam import GradCAM

    with attribution_mode(model):
        layer = modules_of(model, resolve_layer(model, None))
        cam = GradCAM(model=model, target_layers=layer, reshape_transform=partial(to_grid, model=model))
        try:
            cam(input_tensor=images, targets=[SignedOutput(1.0) for _ in range(images.shape[0])])
        finally:
            cam.activations_and_grads.release()


def _peak_memory(fn: Any, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated())


def _rss_drift(model: nn.Module, images: torch.Tensor, warmup: int, calls: int) -> dict[str, Any]:
    process = psutil.Process()
    for _ in range(warmup):
        attribute(model, images, "gradcam")
    gc.collect()
    settled = process.memory_info().rss
    for _ in range(calls):
        attribute(model, images, "gradcam")
    gc.collect()
    final = process.memory_info().rss
    return {"warmup": warmup, "calls": calls, "rss_settled_mb": settled / 2**20, "drift": final / settled - 1}


def _model_figures(model: nn.Module, images: torch.Tensor, device: str, repeats: int) -> dict[str, Any]:
    def infer() -> None:
        with torch.inference_mode():
            model(images)

    figures: dict[str, Any] = {}
    inference = timeit(infer, repeats=repeats)
    ours = timeit(lambda: attribute(model, images, "gradcam"), repeats=repeats)
    library = timeit(lambda: _library_gradcam(model, images), repeats=repeats)
    figures.update(
        inference_s=inference,
        gradcam_s=ours,
        library_gradcam_s=library,
        gradcam_over_inference=ours / inference,
        library_over_ours=library / ours,
    )
    if "gradrollout" in METHODS and model.__class__.__name__ == "VisionTransformer":
        rollout = timeit(lambda: attribute(model, images, "gradrollout"), repeats=repeats)
        figures.update(gradrollout_s=rollout, gradrollout_over_inference=rollout / inference)
        peak_inf = _peak_memory(infer, device)
        peak_roll = _peak_memory(lambda: attribute(model, images, "gradrollout"), device)
        figures["gradrollout_peak_over_inference"] = (
            peak_roll / peak_inf if peak_inf and peak_roll else "not measured on CPU"
        )
    return figures


def run(quick: bool, device: str) -> dict[str, Any]:
    """Ratios per model at batch 32 (quick: 8), 96×192, measured in this process on one batch."""
    batch = 8 if quick else 32
    repeats = 3 if quick else 5
    torch.manual_seed(0)
    images = torch.rand(batch, 3, *SIZE, device=device)
    results: dict[str, Any] = {"batch": batch, "image_size": list(SIZE), "targets": _TARGETS}
    for name, (architecture, kwargs) in MODELS.items():
        model = build_model(architecture, SIZE, **kwargs).to(device).eval()
        results[name] = _model_figures(model, images, device, repeats)
    if "gradrollout" not in METHODS:
        results["gradrollout"] = "skipped: method gradrollout is not registered"
    model = build_model("vit", SIZE).to(device).eval()
    warmup, calls = (10, 40) if quick else (100, 2000)
    results["rss_drift_vit_batch2"] = _rss_drift(model, images[:2], warmup, calls)
    results["cpu_peak_memory"] = "peak memory ratio measured on CUDA only (torch.cuda.max_memory_allocated)"
    return results


_TARGETS = {
    "gradcam_over_inference": "<= 1.3",
    "library_over_ours": ">= 2",
    "gradrollout_over_inference": "<= 3",
    "gradrollout_peak_over_inference": "<= 1.5",
    "rss drift": "<= 5%",
}

SUITE = BenchSuite("attribution", "fast GradCAM vs inference and pytorch-grad-cam; rollout; RSS drift", run)
