"""Gradient baselines through captum (the seed's sanity-check set) and the random and uniform maps.

Captum explains a forward function with one scalar per sample; `ScalarModel` wraps the model so that
captum is called with `target=None` and every sample keeps its own sign. The signs are fixed once from
the unperturbed images and passed as `additional_forward_args`, which captum expands with the inputs:
the interpolated (integrated gradients) and noisy (noise tunnel) copies of image i are explained against
image i's target, not against the sign of their own output. Pixel maps
(B, 3, H, W) become (B, H, W) by a per-method channel reduction:

- `abs_sum` (saliency, SmoothGrad family, guided backprop, guided GradCAM): magnitude maps, where the
  sign of a gradient through gated or squared paths carries no meaning;
- `signed_sum` (gradient, input × gradient, integrated gradients): the sum over channels keeps
  completeness (integrated gradients sum to f(x) − f(black)), and signed maps show what lowers the target.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from captum._utils.common import _register_backward_hook
from captum.attr import (
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gradsum.attribution.base import FAMILIES, Method, register_method
from gradsum.attribution.layers import resolve_layer
from gradsum.attribution.options import float_option, int_option
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models.outputs import output_values


def abs_sum(pixels: Tensor) -> Tensor:
    """Sum of absolute values over colour channels: (B, 3, H, W) → (B, H, W)."""
    return pixels.abs().sum(1)


def signed_sum(pixels: Tensor) -> Tensor:
    """Signed sum over colour channels: (B, 3, H, W) → (B, H, W)."""
    return pixels.sum(1)


#: colour-channel reductions of pixel attributions, by name
CHANNEL_REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {"abs_sum": abs_sum, "signed_sum": signed_sum}


class ScalarModel(nn.Module):
    """The model as captum wants it: images and per-sample signs (B,) → the signed scalars (B,)."""

    def __init__(self, method: Method, model: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.model = model

    def forward(self, images: Tensor, signs: Tensor) -> Tensor:
        return signs * output_values(self.method.forward(self.model, images))


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Draw captum's noise from `seed` without touching the caller's random state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class CaptumMethod(Method):
    """A captum attribution of the per-sample target scalars, reduced over colour channels to pixels."""

    applies_to: ClassVar[frozenset[str]] = FAMILIES
    uses_layer: ClassVar[bool] = False
    grid_note: ClassVar[str] = "pixel map (input resolution), colour channels reduced"
    #: name in `CHANNEL_REDUCTIONS`
    reduction: ClassVar[str] = "abs_sum"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Captum's pixel attribution (B, 3, H, W) reduced to (B, H, W)."""
        scalar = ScalarModel(self, model)
        with torch.no_grad():
            signs = target.signs(output_values(self.forward(model, images)))
        with warnings.catch_warnings():
            # captum warns on every call that it sets (and later removes) hooks
            warnings.simplefilter("ignore", UserWarning)
            pixels = self.pixels(scalar, images, signs, layer)
        return CHANNEL_REDUCTIONS[self.reduction](pixels.detach()).float()

    @abc.abstractmethod
    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Captum's attribution (B, 3, H, W) of `scalar` at `images`, `signs` as its forward argument."""


@register_method("saliency")
class SaliencyMethod(CaptumMethod):
    """Simonyan et al. 2014: |∂y/∂x|, summed over channels."""

    description = "gradient magnitude |∂target/∂x| (captum Saliency), channels summed"

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Absolute input gradient."""
        return Saliency(scalar).attribute(images, target=None, abs=True, additional_forward_args=(signs,))


@register_method("gradient")
class GradientMethod(CaptumMethod):
    """The signed input gradient: positive where brightening a pixel raises the target."""

    description = "signed gradient ∂target/∂x (captum Saliency, abs=False), channels summed"
    reduction = "signed_sum"

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Signed input gradient."""
        return Saliency(scalar).attribute(images, target=None, abs=False, additional_forward_args=(signs,))


@register_method("input_x_gradient")
class InputXGradientMethod(CaptumMethod):
    """Shrikumar et al. 2016: x ⊙ ∂y/∂x, signed."""

    description = "input × gradient (captum InputXGradient), signed, channels summed"
    reduction = "signed_sum"

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Input times input gradient."""
        return InputXGradient(scalar).attribute(images, target=None, additional_forward_args=(signs,))


@register_method("integrated_gradients")
class IntegratedGradientsMethod(CaptumMethod):
    """Sundararajan et al. 2017 from a black image; `internal_batch_size` bounds the images per pass."""

    description = "integrated gradients from a black image (captum), signed, channels summed"
    reduction = "signed_sum"
    defaults: ClassVar[Mapping[str, Any]] = {"n_steps": 32, "internal_batch_size": 64}

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Integrated gradients along the straight path from black to the image."""
        steps = int_option(self.options, "n_steps", minimum=1)
        # captum would warn and raise it anyway when smaller than the batch
        per_pass = max(int_option(self.options, "internal_batch_size", minimum=1), images.shape[0])
        black = torch.zeros_like(images)
        attributions = IntegratedGradients(scalar).attribute(
            images,
            baselines=black,
            target=None,
            additional_forward_args=(signs,),
            n_steps=steps,
            internal_batch_size=per_pass,
        )
        return attributions


class NoiseTunnelMethod(CaptumMethod):
    """A captum NoiseTunnel over Saliency with seeded Gaussian noise of `stdev` (images in [0, 1])."""

    nt_type: ClassVar[str]
    absolute: ClassVar[bool] = True
    defaults: ClassVar[Mapping[str, Any]] = {
        "nt_samples": 16,
        "stdev": 0.15,
        "nt_samples_batch_size": 4,
        "seed": 0,
    }

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """The noise-tunnel aggregate of saliency maps over noisy copies of the images."""
        samples = int_option(self.options, "nt_samples", minimum=1)
        per_pass = int_option(self.options, "nt_samples_batch_size", minimum=1)
        stdev = float_option(self.options, "stdev", minimum=0.0)
        tunnel = NoiseTunnel(Saliency(scalar))
        with seeded(int_option(self.options, "seed"), images.device):
            return tunnel.attribute(
                images,
                nt_type=self.nt_type,
                nt_samples=samples,
                nt_samples_batch_size=min(per_pass, samples),
                stdevs=stdev,
                target=None,
                additional_forward_args=(signs,),
                abs=self.absolute,
            )


@register_method("smoothgrad")
class SmoothGradMethod(NoiseTunnelMethod):
    """Smilkov et al. 2017: mean |∇| over noisy copies."""

    description = "SmoothGrad: mean gradient magnitude over noisy copies (captum NoiseTunnel)"
    nt_type = "smoothgrad"


@register_method("smoothgrad_sq")
class SmoothGradSquaredMethod(NoiseTunnelMethod):
    """Mean squared gradient over noisy copies."""

    description = "SmoothGrad²: mean squared gradient over noisy copies (captum NoiseTunnel)"
    nt_type = "smoothgrad_sq"


@register_method("vargrad")
class VarGradMethod(NoiseTunnelMethod):
    """Adebayo et al. 2018: variance of the signed gradient over noisy copies."""

    description = "VarGrad: variance of the signed gradient over noisy copies (captum NoiseTunnel)"
    nt_type = "vargrad"
    absolute = False


#: The elementwise activation modules whose backward guided backprop gates. Springenberg et al. gate the
#: ReLUs of an all-ReLU net; read as "no negative gradient flows back through a nonlinearity", the rule
#: applies to every rectifier-like activation a model uses (ELU in PilotNet, GELU in ViT MLPs). Squashing
#: gates (sigmoid, tanh) are left out: they scale a path rather than rectify it, and gating a model's
#: output squash would zero every negatively signed target.
GATED_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)

#: The functional forms of those activations, by the name an error shows. A backward hook needs a module,
#: so a model that calls one outside a gated module (e.g. `F.elu` inside its own `forward`) cannot be
#: guided: it is refused.
FUNCTIONAL_ACTIVATIONS: dict[Callable[..., Any], str] = {
    **{
        getattr(F, name): f"torch.nn.functional.{name}"
        for name in (
            "relu",
            "relu_",
            "relu6",
            "leaky_relu",
            "leaky_relu_",
            "prelu",
            "rrelu",
            "rrelu_",
            "elu",
            "elu_",
            "celu",
            "celu_",
            "selu",
            "selu_",
            "gelu",
            "silu",
            "mish",
            "hardswish",
            "softplus",
        )
    },
    **{getattr(torch, name): f"torch.{name}" for name in ("relu", "relu_", "selu", "celu", "prelu", "rrelu")},
    **{getattr(Tensor, name): f"Tensor.{name}" for name in ("relu", "relu_")},
}


class _ActivationProbe(TorchFunctionMode):
    """Records the functional activations a forward pass calls outside a gated activation module.

    Forward hooks on every module keep the stack of modules being run, so a call is attributed to the
    innermost module that made it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, nn.Module]] = []
        self.ungated: dict[str, str] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        if func in FUNCTIONAL_ACTIVATIONS and not any(
            isinstance(m, GATED_ACTIVATIONS) for _, m in self.stack
        ):
            where = self.stack[-1][0] if self.stack else ""
            self.ungated.setdefault(FUNCTIONAL_ACTIVATIONS[func], where or "<model>")
        return func(*args, **(kwargs or {}))

    @contextmanager
    def watching(self, model: nn.Module) -> Iterator[None]:
        """Keep the module stack of `model` while the block runs; every hook is removed after."""

        def enter(path: str) -> Callable[..., None]:
            return lambda module, _inputs: self.stack.append((path, module))

        def leave(_module: nn.Module, _inputs: Any, _output: Any) -> None:
            self.stack.pop()

        handles = []
        try:
            for path, module in model.named_modules():
                handles.append(module.register_forward_pre_hook(enter(path)))
                handles.append(module.register_forward_hook(leave))
            with self:
                yield
        finally:
            for handle in handles:
                handle.remove()


def refuse_ungated_activations(model: nn.Module, run: Callable[[], object]) -> None:
    """Raise when `run` (a forward pass of `model`) calls an activation that guided backprop cannot gate."""
    probe = _ActivationProbe()
    with torch.no_grad(), probe.watching(model):
        run()
    if probe.ungated:
        calls = ", ".join(f"{func} (in {where})" for func, where in sorted(probe.ungated.items()))
        gated = ", ".join(f"nn.{kind.__name__}" for kind in GATED_ACTIVATIONS)
        raise AttributionError(
            f"guided backprop: the model calls {calls} outside an activation module, whose backward cannot be "
            f"gated; guided backprop gates only these modules: {gated}"
        )


class ActivationGuidedBackprop(GuidedBackprop):
    """Captum's guided backprop gating every `GATED_ACTIVATIONS` module, not only `nn.ReLU`.

    Each activation's gradient with respect to its input (after the activation's own derivative) is
    clamped at 0, as captum does for ReLU: only positive gradients pass back through a nonlinearity.
    """

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, GATED_ACTIVATIONS):
            self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))


def _guarded(scalar: ScalarModel, images: Tensor, signs: Tensor) -> None:
    """Refuse a model with functional activations, probing one image's forward pass."""
    refuse_ungated_activations(scalar.model, lambda: scalar(images[:1], signs[:1]))


@register_method("guided_backprop")
class GuidedBackpropMethod(CaptumMethod):
    """Springenberg et al. 2015: the input gradient with every activation's backward gated at 0.

    Captum's `GuidedBackprop` gates `nn.ReLU` modules only, so on PilotNet (ELU) or a ViT (GELU) it would
    equal the saliency map; `ActivationGuidedBackprop` gates every activation module of
    `GATED_ACTIVATIONS`, and a model that calls an activation functionally is refused.
    """

    description = (
        "guided backprop: every activation module's backward gated at 0 (captum, extended), |·| summed"
    )

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Guided-backprop input gradient."""
        _guarded(scalar, images, signs)
        return ActivationGuidedBackprop(scalar).attribute(
            images, target=None, additional_forward_args=(signs,)
        )


@register_method("guided_gradcam")
class GuidedGradCamMethod(CaptumMethod):
    """Selvaraju et al. 2017 via captum: guided backprop × GradCAM (ReLU'd, nearest-upsampled).

    The guided-backprop factor is `ActivationGuidedBackprop`, the one `guided_backprop` computes.
    """

    description = "guided GradCAM (captum) on a 4-D conv layer: CNN stage or hybrid tokenizer, |·| summed"
    applies_to = frozenset({"cnn", "hybrid"})
    uses_layer = True
    # a hybrid's family default is the transformer view, whose tokens captum cannot map to pixels
    default_layer: ClassVar[Mapping[str, str]] = {"hybrid": "tokenizer"}

    def pixels(self, scalar: ScalarModel, images: Tensor, signs: Tensor, layer: str | None) -> Tensor:
        """Guided backprop times the layer's GradCAM upsampled to the input."""
        model = scalar.model
        module = model.get_submodule(conv_layer_path(model, layer))
        _guarded(scalar, images, signs)
        method = GuidedGradCam(scalar, module)
        method.guided_backprop = ActivationGuidedBackprop(scalar)
        return method.attribute(images, target=None, additional_forward_args=(signs,))


def conv_layer_path(model: nn.Module, layer: str | None) -> str:
    """The module path of a 4-D conv layer for captum's GradCAM."""
    choice = resolve_layer(model, layer)
    if len(choice.paths) != 1 or choice.paths[0].startswith("blocks."):
        raise AttributionError(
            f"layer: guided_gradcam needs one 4-D convolutional layer, not {layer!r} (on a hybrid: 'tokenizer')"
        )
    return choice.paths[0]


@register_method("random")
class RandomMethod(Method):
    """A seeded uniform-noise map per image: the floor every method must beat."""

    description = "random pixel map, uniform in [0, 1), seeded (option seed)"
    applies_to = FAMILIES
    uses_layer = False
    defaults: ClassVar[Mapping[str, Any]] = {"seed": 0}
    grid_note = "pixel map (input resolution)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Noise drawn on the CPU from `seed`, so every device gives the same maps."""
        generator = torch.Generator().manual_seed(int_option(self.options, "seed"))
        batch, _, height, width = images.shape
        return torch.rand(batch, height, width, generator=generator).to(images.device)


@register_method("sobel")
class SobelMethod(Method):
    """Edge strength of the input image: a map that knows nothing of the model (a null explainer)."""

    description = "Sobel gradient magnitude of the input's grey image (model-independent null explainer)"
    applies_to = FAMILIES
    uses_layer = False
    grid_note = "pixel map (input resolution)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """|∇ grey| with 3×3 Sobel kernels and replicated borders."""
        grey = images.detach().mean(1, keepdim=True)
        kernel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], device=images.device)
        kernels = torch.stack([kernel, kernel.T])[:, None].to(grey.dtype)
        padded = torch.nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate")
        gradients = torch.nn.functional.conv2d(padded, kernels)
        return gradients.pow(2).sum(1).sqrt()


@register_method("uniform")
class UniformMethod(Method):
    """The same value at every pixel: a profile that only reflects class areas."""

    description = "uniform map (every pixel 1); min–max turns it into zeros, use normalise='raw' or 'sum'"
    applies_to = FAMILIES
    uses_layer = False
    grid_note = "pixel map (input resolution)"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Ones at input resolution."""
        batch, _, height, width = images.shape
        return torch.ones(batch, height, width, device=images.device)
