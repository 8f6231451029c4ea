"""Layer-wise relevance propagation for CNNs through Zennit (Bach et al. 2015; Montavon et al. 2017).

One method per Zennit composite, from the table `LRP_COMPOSITES`. Every call runs Zennit's `Gradient`
attributor inside a `with` block that applies the canonizers and rules and undoes all of them on exit:

- BatchNorm is merged into the convolution before it (`SequentialMergeBatchNorm`: every conv → BN pair
  of PilotNet, compact_cnn and timm ResNets is adjacent in module order); timm ResNet blocks get an
  explicit `Sum` module for the residual addition so that the sum splits relevance instead of copying it;
- the in-model input scaling (`UnitToSigned`, `Standardise`) passes relevance through unchanged: it is
  elementwise, so a pixel's relevance is that of its scaled value (as a gradient it would scale it);
- the first layer's box bounds (`EpsilonGammaBox`) are the images 0 and 1 seen through that scaling.

The map is the relevance summed over colour channels, signed, at input resolution. The relevance put
into the output is the explained scalar `sign_i · y_i`, so a map sums to it minus what biases absorb.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from timm.models.resnet import BasicBlock, Bottleneck
from torch import Tensor, nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat
from zennit.core import Composite
from zennit.layer import Sum
from zennit.rules import Pass
from zennit.types import Linear as ZennitLinear

from gradsum.attribution.adapters import OutputSelector
from gradsum.attribution.base import LRP_ON_INT8, Method, register_method
from gradsum.attribution.options import float_option
from gradsum.attribution.precision import LRP_DENOMINATORS
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models.architectures import Standardise, UnitToSigned

#: the range of the pixels every GradSUM model takes
PIXEL_RANGE = (0.0, 1.0)

#: elementwise input scalings inside our models; relevance passes them unchanged
INPUT_SCALINGS: tuple[type[nn.Module], ...] = (UnitToSigned, Standardise)

#: Zennit layer map entries put before each composite's own
LayerMap = list[tuple[tuple[type[nn.Module], ...], Any]]


@dataclass(frozen=True)
class CompositeInputs:
    """What a composite factory may use: the method's options, the shared layer map and canonizers, box bounds."""

    options: Mapping[str, Any]
    layer_map: LayerMap
    canonizers: list[Canonizer]
    low: Tensor
    high: Tensor


@dataclass(frozen=True)
class LRPComposite:
    """One registered LRP method: its description, options and how to build its Zennit composite."""

    description: str
    build: Callable[[CompositeInputs], Composite]
    defaults: Mapping[str, Any]


def _epsilon_plus(given: CompositeInputs) -> Composite:
    return EpsilonPlus(
        epsilon=float_option(given.options, "epsilon", minimum=0.0),
        layer_map=given.layer_map,
        canonizers=given.canonizers,
    )


def _epsilon_plus_flat(given: CompositeInputs) -> Composite:
    return EpsilonPlusFlat(
        epsilon=float_option(given.options, "epsilon", minimum=0.0),
        layer_map=given.layer_map,
        canonizers=given.canonizers,
    )


def _epsilon_gamma_box(given: CompositeInputs) -> Composite:
    return EpsilonGammaBox(
        low=given.low,
        high=given.high,
        epsilon=float_option(given.options, "epsilon", minimum=0.0),
        gamma=float_option(given.options, "gamma", minimum=0.0),
        layer_map=given.layer_map,
        canonizers=given.canonizers,
    )


#: method name → composite; each entry becomes one registered method
LRP_COMPOSITES: dict[str, LRPComposite] = {
    "lrp_epsilon_plus": LRPComposite(
        "LRP (Zennit EpsilonPlus): z+ rule on convolutions, epsilon on dense layers; signed, channels summed",
        _epsilon_plus,
        {"epsilon": 1e-6},
    ),
    "lrp_epsilon_plus_flat": LRPComposite(
        "LRP (Zennit EpsilonPlusFlat): flat rule on the first layer, then as lrp_epsilon_plus; signed",
        _epsilon_plus_flat,
        {"epsilon": 1e-6},
    ),
    "lrp_epsilon_gamma_box": LRPComposite(
        "LRP (Zennit EpsilonGammaBox): z-box on the first layer (pixels in [0,1]), gamma on convolutions, "
        "epsilon on dense layers; signed",
        _epsilon_gamma_box,
        {"epsilon": 1e-6, "gamma": 0.25},
    ),
}


def _residual_forward(block: Any, x: Tensor, branch: Callable[[Tensor], Tensor]) -> Tensor:
    """A timm ResNet block's forward whose residual addition is the hookable `canonizer_sum` module."""
    shortcut = x if block.downsample is None else block.downsample(x)
    out = branch(x)
    if block.se is not None:
        out = block.se(out)
    if block.drop_path is not None:
        out = block.drop_path(out)
    final = block.act3 if isinstance(block, Bottleneck) else block.act2
    return final(block.canonizer_sum(torch.stack([shortcut, out], dim=-1)))


def _basic_branch(block: Any, x: Tensor) -> Tensor:
    out = block.act1(block.drop_block(block.bn1(block.conv1(x))))
    return block.bn2(block.conv2(block.aa(out)))


def _bottleneck_branch(block: Any, x: Tensor) -> Tensor:
    out = block.act1(block.bn1(block.conv1(x)))
    out = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(out)))))
    return block.bn3(block.conv3(out))


#: timm residual block type → its residual branch (the part before the addition)
RESIDUAL_BRANCHES: dict[type[nn.Module], Callable[[Any, Tensor], Tensor]] = {
    BasicBlock: _basic_branch,
    Bottleneck: _bottleneck_branch,
}


def _residual_attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
    branch = RESIDUAL_BRANCHES.get(type(module))
    if branch is None:
        return None

    def forward(x: Tensor) -> Tensor:
        return _residual_forward(module, x, lambda inner: branch(module, inner))

    return {"forward": forward, "canonizer_sum": Sum()}


class OutOfPlaceActivations(Canonizer):
    """Turns in-place activations (timm's ReLU) out of place: Zennit's hooks wrap a module's output."""

    def __init__(self) -> None:
        self.modules: list[nn.Module] = []

    def apply(self, root_module: nn.Module) -> list[Canonizer]:
        """One instance holding every in-place module under `root_module`, already registered."""
        instance = OutOfPlaceActivations()
        instance.modules = [m for m in root_module.modules() if getattr(m, "inplace", None) is True]
        instance.register()
        return [instance]

    def register(self) -> None:
        """Compute out of place."""
        for module in self.modules:
            setattr(module, "inplace", False)  # noqa: B010 - mypy sees Module.__setattr__ types

    def remove(self) -> None:
        """Back to in place."""
        for module in self.modules:
            setattr(module, "inplace", True)  # noqa: B010 - mypy sees Module.__setattr__ types


def canonizers() -> list[Canonizer]:
    """BatchNorm merged into the preceding conv, residual sums as modules, activations out of place."""
    return [
        SequentialMergeBatchNorm(),
        AttributeCanonizer(_residual_attributes),
        OutOfPlaceActivations(),
    ]


def first_layer_bounds(model: nn.Module, like: Tensor) -> tuple[Tensor, Tensor]:
    """The first conv/linear layer's input for all-black and all-white images: the z-box bounds.

    The first layer is the one Zennit's first-layer rule takes (the first in module order).
    """
    first = next((m for m in model.modules() if isinstance(m, ZennitLinear)), None)
    if first is None:
        raise AttributionError(f"method lrp: {type(model).__name__} has no convolution or linear layer")
    seen: list[Tensor] = []
    handle = first.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    low, high = PIXEL_RANGE
    try:
        with torch.no_grad():
            model(torch.stack([torch.full_like(like[0], low), torch.full_like(like[0], high)]))
    finally:
        handle.remove()
    return seen[0][:1], seen[0][1:]


class ZennitLRPMethod(Method):
    """LRP by one Zennit composite; subclasses are made from `LRP_COMPOSITES`."""

    applies_to: ClassVar[frozenset[str]] = frozenset({"cnn"})
    uses_layer: ClassVar[bool] = False
    grid_note: ClassVar[str] = "pixel relevance (input resolution), colour channels summed, signed"
    half_precision_refusal: ClassVar[str | None] = LRP_DENOMINATORS
    int8_refusal: ClassVar[str | None] = LRP_ON_INT8
    composite: ClassVar[LRPComposite]

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Relevance of each pixel for the explained scalar, summed over colour channels."""
        explained = OutputSelector(model, self.output_key)
        low, high = first_layer_bounds(explained, images)
        pass_through: LayerMap = [(INPUT_SCALINGS, Pass())]
        composite = self.composite.build(CompositeInputs(self.options, pass_through, canonizers(), low, high))

        def output_relevance(output: Tensor) -> Tensor:
            return target.select(output).detach().reshape(output.shape)

        with Gradient(model=explained, composite=composite) as attributor:
            _, relevance = attributor(images.detach().requires_grad_(), output_relevance)
        return relevance.sum(1).float()


def _lrp_class(name: str, composite: LRPComposite) -> type[Method]:
    """A `ZennitLRPMethod` for `composite`."""
    members = {
        "__doc__": composite.description,
        "description": composite.description,
        "composite": composite,
        "defaults": composite.defaults,
    }
    return type(f"LRP_{name}", (ZennitLRPMethod,), members)


# one class per composite, each registered like any method
for _name, _composite in LRP_COMPOSITES.items():
    register_method(_name)(_lrp_class(_name, _composite))
