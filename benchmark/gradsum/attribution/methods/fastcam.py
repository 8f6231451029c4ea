"""Torch-native CAM family (GradCAM, HiResCAM, GradCAM++, XGradCAM, LayerCAM): as fast as the model allows.

One forward with a hook that keeps the target layer's output on the device, `torch.autograd.grad` from
the summed per-sample targets to that layer only (never to the input, no parameter `.grad`), then
batched weights and the signed map on the layer's grid. The CAM's ReLU is the recorded `relu`
post-processing step (`default_postprocess`), so the signed map stays available as `raw`;
pytorch-grad-cam (`lib:<name>`) = our map with the default steps is the oracle in the tests.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from gradsum.attribution.adapters import to_grid
from gradsum.attribution.base import FAMILIES, Method, register_method
from gradsum.attribution.layers import modules_of, resolve_layer
from gradsum.attribution.normalise import minmax
from gradsum.attribution.postprocess import relu
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError

#: pytorch-grad-cam's epsilons, kept so the maps equal the library's
PLUSPLUS_EPS = 1e-6
XGRAD_EPS = 1e-7


def _capture_hook(store: list[Tensor | None], index: int, path: str) -> Any:
    def hook(module: nn.Module, args: Any, out: Any) -> Tensor | None:
        if not isinstance(out, Tensor):
            raise AttributionError(f"layer: {path} returns a {type(out).__name__}, not a tensor")
        if out.requires_grad:
            store[index] = out
            return None
        # frozen parameters and plain images leave the layer without a graph: restart autograd here;
        # the clone keeps later in-place ops off the leaf
        leaf = out.detach().requires_grad_(True)
        store[index] = leaf
        return leaf.clone()

    return hook


def layer_gradients(
    method: Method, model: nn.Module, images: Tensor, target: Target, layer: str | None
) -> list[tuple[Tensor, Tensor]]:
    """(activation, gradient) pairs as (B,C,h,w) for each hooked layer; the graph is freed on return."""
    choice = resolve_layer(model, layer)
    store: list[Tensor | None] = [None] * len(choice.paths)
    handles: list[RemovableHandle] = []
    try:
        for index, (module, path) in enumerate(zip(modules_of(model, choice), choice.paths, strict=True)):
            handles.append(module.register_forward_hook(_capture_hook(store, index, path)))
        output = method.forward(model, images)
    finally:
        for handle in handles:
            handle.remove()
    activations = [a for a in store if a is not None]
    if len(activations) != len(store):
        missing = [p for p, a in zip(choice.paths, store, strict=True) if a is None]
        raise AttributionError(f"layer: {', '.join(missing)} did not run in the model's forward")
    scalar = target.select(output).sum()
    if not scalar.requires_grad:
        raise AttributionError(f"layer: the model output does not depend on {choice.name}")
    grads = torch.autograd.grad(scalar, activations, allow_unused=True)
    return [
        (to_grid(a.detach(), model), to_grid(g if g is not None else torch.zeros_like(a), model))
        for a, g in zip(activations, grads, strict=True)
    ]


#: what `combine_layers` applies to each layer's map when there are several (pytorch-grad-cam's order)
MULTI_LAYER = "relu per layer", "bilinear to the finest layer grid", "minmax per layer", "mean over layers"


def combine_layers(cams: list[Tensor]) -> Tensor:
    """One map from several layers' signed CAMs: each ReLU'd, resized to the finest grid, min–max
    normalised, then averaged (a single layer's map is returned as it is, signed)."""
    if len(cams) == 1:
        return cams[0]
    rows = max(c.shape[-2] for c in cams)
    cols = max(c.shape[-1] for c in cams)
    resized = [
        F.interpolate(relu(c)[:, None], size=(rows, cols), mode="bilinear", align_corners=False)[:, 0]
        for c in cams
    ]
    return torch.stack([minmax(c) for c in resized]).mean(dim=0)


class FastCAM(Method):
    """A CAM computed from one layer's activation A and gradient G, both (B,C,h,w)."""

    applies_to: ClassVar[frozenset[str]] = FAMILIES
    uses_layer: ClassVar[bool] = True
    freeze_parameters: ClassVar[bool] = True
    grid_note: ClassVar[str] = "signed CAM on the layer's feature map or patch-token grid"
    default_postprocess: ClassVar[tuple[str, ...]] = ("relu",)

    @abc.abstractmethod
    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """The signed map (B,h,w) before ReLU."""

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """The signed CAM (B,h,w) of the hooked layer; several layers are combined on their finest grid."""
        pairs = layer_gradients(self, model, images, target, layer)
        if len(pairs) > 1:
            self.performed = MULTI_LAYER
        return combine_layers([self.cam(a, g) for a, g in pairs])


def _spatial_sum(t: Tensor) -> Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


@register_method("gradcam")
class GradCAM(FastCAM):
    """Channel weights = spatial mean of the gradient (Selvaraju et al. 2017)."""

    description = "GradCAM (fast torch path): spatial-mean gradient weights × activations"

    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Σ_c mean(G_c)·A_c."""
        return (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1)


@register_method("hirescam")
class HiResCAM(FastCAM):
    """Element-wise gradient × activation summed over channels (Draelos & Carin 2020)."""

    description = "HiResCAM (fast torch path): element-wise gradient × activation"

    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Σ_c G_c⊙A_c."""
        return (gradient * activation).sum(dim=1)


@register_method("gradcam++")
class GradCAMPlusPlus(FastCAM):
    """Second-order channel weights (Chattopadhyay et al. 2018), pytorch-grad-cam's formulation."""

    description = "GradCAM++ (fast torch path): higher-order gradient weights"

    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Σ_c w_c·A_c with w_c = Σ relu(G)·α, α = G² / (2G² + ΣA·G³)."""
        squared = gradient.pow(2)
        alpha = squared / (2 * squared + _spatial_sum(activation) * squared * gradient + PLUSPLUS_EPS)
        alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
        weights = _spatial_sum(F.relu(gradient) * alpha)
        return (weights * activation).sum(dim=1)


@register_method("xgradcam")
class XGradCAM(FastCAM):
    """Axiom-based weights Σ G·A / ΣA (Fu et al. 2020)."""

    description = "XGradCAM (fast torch path): activation-normalised gradient weights"

    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Σ_c w_c·A_c with w_c = Σ G·A / (ΣA + ε)."""
        weights = _spatial_sum(gradient * activation / (_spatial_sum(activation) + XGRAD_EPS))
        return (weights * activation).sum(dim=1)


@register_method("layercam")
class LayerCAM(FastCAM):
    """Positive gradients as element-wise weights (Jiang et al. 2021)."""

    description = "LayerCAM (fast torch path): relu(gradient) × activation"

    def cam(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Σ_c relu(G_c)⊙A_c."""
        return (F.relu(gradient) * activation).sum(dim=1)
