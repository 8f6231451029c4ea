"""Attribution speed and memory: fast GradCAM vs inference and vs pytorch-grad-cam, rollout, RSS drift."""

from __future__ import annotations

import ctypes
import gc
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import psutil
import torch
from torch import nn

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.adapters import attribution_mode, to_grid
from gradsum.attribution.layers import modules_of, resolve_layer
from gradsum.attribution.methods.cam import SignedOutput
from gradsum.attribution.methods.lrp import ZennitLRPMethod
from gradsum.attribution.methods.lrp_transformer import lxt_module
from gradsum.bench import BenchSuite, timeit
from gradsum.errors import AttributionError
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


#: how `_peak_in_this_process` measures, written into the JSON
PEAK_METHOD = (
    "each op in a fresh subprocess (build model, one warm-up call, then 3 measured calls, minimum kept); "
    "CPU: VmHWM after the call minus VmRSS just before it, with the peak reset (/proc/self/clear_refs 5) "
    "and freed heap returned (malloc_trim) before each call, else ru_maxrss minus RSS before; "
    "CUDA: torch.cuda.max_memory_allocated minus memory_allocated before the call"
)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field))
    return int(line.split()[1])


def _cpu_peak_bytes(fn: Callable[[], Any]) -> float:
    """Peak resident memory above the resident memory just before `fn()`."""
    gc.collect()
    try:
        # memory freed by earlier calls stays resident and would be reused unseen
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        before = psutil.Process().memory_info().rss
        fn()
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    before = _status_kb("VmRSS")
    fn()
    return float((_status_kb("VmHWM") - before) * 1024)


def _cuda_peak_bytes(fn: Callable[[], Any]) -> float:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


#: the op name of the reference every ratio divides by
INFERENCE = "inference"


def _infer(model: nn.Module, images: torch.Tensor) -> None:
    """The reference every ratio divides by: the model's forward with no autograd, as a user runs it."""
    with torch.inference_mode():
        model(images)


#: ops that are a method run with options: op name → (method, options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gradrollout_recompute": ("gradrollout", {"recompute": True}),
}


def method_of(op: str) -> str:
    """The registered method an op runs (the op itself unless it is one of `VARIANTS`)."""
    return VARIANTS[op][0] if op in VARIANTS else op


def _operation(op: str, model: nn.Module, images: torch.Tensor) -> Callable[[], Any]:
    """`op` (INFERENCE, a method's name or one of `VARIANTS`) on `images` as a call with no arguments."""
    if op == INFERENCE:
        return partial(_infer, model, images)
    method, options = VARIANTS.get(op, (op, {}))
    return partial(attribute, model, images, method, **options)


def _peak_in_this_process(
    op: str,
    batch: int,
    device: str,
    size: tuple[int, int] = SIZE,
    vit: Mapping[str, Any] | None = None,
    warmup: int = 1,
    calls: int = 3,
) -> float:
    """Peak memory (bytes) of `op` on `build_model("vit", size, **vit)`; run it in a fresh process.

    `op` is INFERENCE or a method's name; the defaults are the default ViT at SIZE. The figure is the
    minimum over `calls` calls after `warmup` calls.
    """
    torch.manual_seed(0)
    model = build_model("vit", size, **(vit or {})).to(device).eval()
    images = torch.rand(batch, 3, *size, device=device)
    fn = _operation(op, model, images)
    measure = _cuda_peak_bytes if device == "cuda" else _cpu_peak_bytes
    for _ in range(warmup):
        fn()
    return min(measure(fn) for _ in range(calls))


def _peak_memory(op: str, batch: int, device: str, **options: Any) -> float:
    """`_peak_in_this_process` in a fresh interpreter, so neither op sees the other's allocator state.

    `options` are its keyword arguments, passed as Python literals.
    """
    arguments = "".join(f", {key}={value!r}" for key, value in options.items())
    code = (
        "from gradsum.bench.suites.attribution import _peak_in_this_process as peak; "
        f"print(peak({op!r}, {batch}, {device!r}{arguments}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _gradrollout_memory(batch: int, device: str) -> dict[str, Any]:
    inference = _peak_memory("inference", batch, device)
    rollout = _peak_memory("gradrollout", batch, device)
    return {
        "method": PEAK_METHOD,
        "inference_peak_mb": inference / 2**20,
        "gradrollout_peak_mb": rollout / 2**20,
        "gradrollout_peak_over_inference": rollout / inference,
    }


def _interleaved_minimums(ops: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Minimum seconds per op over `repeats` rounds that call each op once, after one warm-up round."""
    best = dict.fromkeys(ops, float("inf"))
    for round_ in range(repeats + 1):
        for name, fn in ops.items():
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    return best


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
        # minimums over interleaved calls: on a loaded machine the fastest call is the least disturbed
        fastest = _interleaved_minimums(
            {"inference": infer, "gradrollout": lambda: attribute(model, images, "gradrollout")}, repeats
        )
        figures["gradrollout_over_inference_min"] = fastest["gradrollout"] / fastest["inference"]
        figures["gradrollout_memory"] = _gradrollout_memory(images.shape[0], device)
    return figures


#: the model the CNN LRP methods are timed on
LRP_MODEL = "pilotnet"


def _lrp_figures(model: nn.Module, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Each Zennit LRP method's time ÷ inference: minimums over interleaved calls (a shared machine)."""
    names = [name for name, cls in METHODS.items() if issubclass(cls, ZennitLRPMethod)]

    def infer() -> None:
        with torch.inference_mode():
            model(images)

    ops: dict[str, Callable[[], Any]] = {"inference": infer}
    ops.update({name: partial(attribute, model, images, name) for name in names})
    fastest = _interleaved_minimums(ops, repeats)
    return {f"{name}_over_inference": fastest[name] / fastest["inference"] for name in names}


#: transformer LRP methods timed on the default ViT; attnlrp and cplrp need the optional lxt
TRANSFORMER_LRP = ("chefer_lrp", "attnlrp", "cplrp")


def _transformer_lrp_figures(model: nn.Module, images: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Each transformer LRP method's time ÷ inference: minimums over interleaved calls (a shared machine)."""
    names = list(TRANSFORMER_LRP)
    figures: dict[str, Any] = {}
    try:
        lxt_module("rules", "attnlrp")
    except AttributionError as error:
        names = ["chefer_lrp"]
        figures["attnlrp"] = figures["cplrp"] = f"skipped: {error}"

    def infer() -> None:
        with torch.inference_mode():
            model(images)

    # the floor of any one-backward method: a plain input gradient (captum InputXGradient) on the same ViT
    names.append(GRADIENT_FLOOR)
    ops: dict[str, Callable[[], Any]] = {"inference": infer}
    ops.update({name: partial(attribute, model, images, name) for name in names})
    fastest = _interleaved_minimums(ops, repeats)
    figures.update({f"{name}_over_inference": fastest[name] / fastest["inference"] for name in names})
    return figures


#: The one-backward reference beside the transformer LRP methods.
GRADIENT_FLOOR = "input_x_gradient"


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
    architecture, kwargs = MODELS[LRP_MODEL]
    lrp_model = build_model(architecture, SIZE, **kwargs).to(device).eval()
    results[f"lrp_{LRP_MODEL}"] = _lrp_figures(lrp_model, images, repeats)
    if "gradrollout" not in METHODS:
        results["gradrollout"] = "skipped: method gradrollout is not registered"
    vit = build_model("vit", SIZE).to(device).eval()
    results["transformer_lrp_vit"] = _transformer_lrp_figures(vit, images, repeats)
    model = build_model("vit", SIZE).to(device).eval()
    warmup, calls = (10, 40) if quick else (100, 2000)
    results["rss_drift_vit_batch2"] = _rss_drift(model, images[:2], warmup, calls)
    return results


_TARGETS = {
    "gradcam_over_inference": "<= 1.3",
    "library_over_ours": ">= 2",
    "gradrollout_over_inference": "<= 3",
    "gradrollout_peak_over_inference": "<= 1.5",
    "attnlrp_over_inference": "<= 3",
    "rss drift": "<= 5%",
}

SUITE = BenchSuite("attribution", "fast GradCAM vs inference and pytorch-grad-cam; rollout; RSS drift", run)
