"""AttnLRP (Achtibat et al. ICML 2024) and CP-LRP (Ali et al. ICML 2022) for timm ViTs, through `lxt`.

lxt's efficient mode writes LRP as gradient×input with modified gradients, so one backward pass gives
the relevance: the identity rule on elementwise non-linearities (`identity_rule_implicit`), LayerNorm
with its standard deviation held constant (`layer_norm_forward`), the uniform rule on the attention's
matrix products (`divide_gradient`: ÷4 on queries and keys, ÷2 on values) and, for CP-LRP, no relevance
through the softmax (`stop_gradient` on queries and keys). lxt ships these patches for Hugging Face
models and torchvision's ViT, not for timm; the map below applies lxt's own rule functions to timm's
`Attention`, `Mlp`, `LayerNorm` and activations. Linear and convolution layers use the plain gradient
(LRP-ε with ε → 0, bias absorbing relevance), as lxt's efficient patches do.

Patches are set on the model's module instances (not on the classes, as lxt's `monkey_patch` does), so
no other model in the process is affected, and `lrp_patched` removes every one of them on exit.
The map is pixel relevance x·∂(explained output)/∂x summed over RGB. lxt (and LRP) carry a patent
notice: free for personal and scientific use; it is the optional extra `pip install 'gradsum[lrp]'`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import MethodType, ModuleType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from timm.layers import Attention, Mlp
from torch import Tensor, nn

from gradsum.attribution.adapters import select_output
from gradsum.attribution.base import LRP_ON_INT8, Method, register_method
from gradsum.attribution.precision import LRP_DENOMINATORS
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.registry import Registry

INSTALL_HINT = "pip install 'gradsum[lrp]'"

#: elementwise activations that take the identity rule wherever they sit (an Mlp, a hybrid's stem)
ACTIVATIONS = (nn.GELU, nn.ELU, nn.SiLU, nn.Tanh)


def lxt_module(name: str, method: str) -> ModuleType:
    """`lxt.efficient.<name>`, or an error saying how to install the optional extra."""
    try:
        return importlib.import_module(f"lxt.efficient.{name}")
    except ImportError as error:
        raise AttributionError(
            f"method {method}: needs the optional library lxt ({error}); enable it with {INSTALL_HINT}"
        ) from None


def _attention(
    self: Attention, x: Tensor, wrap: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, ...]]
) -> Tensor:
    """timm `Attention.forward` with q, k, v passed through `wrap` after their projection and norms.

    The modified gradients live on q, k and v, so the product itself may run on the fused kernel.
    """
    if getattr(self, "gate", None) is not None:
        raise AttributionError("model: a gated timm Attention has no LRP rule here")
    batch, tokens, _ = x.shape
    qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k, v = wrap(self.q_norm(q), self.k_norm(k), v)
    x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
    x = self.norm(x.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
    return self.proj_drop(self.proj(x))


def _no_mask(attn_mask: Tensor | None, is_causal: bool) -> None:
    if attn_mask is not None or is_causal:
        raise AttributionError("model: a masked or causal timm Attention has no LRP rule here")


def attnlrp_attention_forward(
    self: Attention, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """AttnLRP: uniform rule on both products (lxt's `wrap_attention_forward`), gradient through softmax."""
    _no_mask(attn_mask, is_causal)
    rules = lxt_module("rules", "attnlrp")

    def wrap(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, ...]:
        return rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)

    return _attention(self, x, wrap)


def cplrp_attention_forward(
    self: Attention, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
) -> Tensor:
    """CP-LRP: the attention map is a constant; relevance flows through the values only."""
    _no_mask(attn_mask, is_causal)
    rules = lxt_module("rules", "cplrp")
    return _attention(self, x, lambda q, k, v: (rules.stop_gradient(q), rules.stop_gradient(k), v))


def mlp_forward(self: Mlp, x: Tensor) -> Tensor:
    """timm `Mlp.forward` with the identity rule on its activation, whatever its type."""
    rules = lxt_module("rules", "attnlrp")
    x = rules.identity_rule_implicit(self.act, self.fc1(x))
    return self.drop2(self.fc2(self.norm(self.drop1(x))))


def _layer_norm(module: nn.Module) -> Callable[..., Tensor]:
    return MethodType(lxt_module("patches", "attnlrp").layer_norm_forward, module)


def _activation(module: nn.Module) -> Callable[..., Tensor]:
    # lxt's non_linear_forward calls `self.original_forward`, the unpatched forward of the instance
    setattr(module, "original_forward", module.forward)  # noqa: B010 - an instance attribute
    return MethodType(lxt_module("patches", "attnlrp").non_linear_forward, module)


def _bound(function: Callable[..., Tensor]) -> Callable[[nn.Module], Callable[..., Tensor]]:
    return lambda module: MethodType(function, module)


#: module type → the instance's patched forward; the first matching type wins
PatchMap = Mapping[
    type[nn.Module] | tuple[type[nn.Module], ...], Callable[[nn.Module], Callable[..., Tensor]]
]

_COMMON: dict[Any, Callable[[nn.Module], Callable[..., Tensor]]] = {
    Mlp: _bound(mlp_forward),
    nn.LayerNorm: _layer_norm,
    ACTIVATIONS: _activation,
}
PATCH_MAPS: Registry[PatchMap] = Registry("LRP variant")
PATCH_MAPS.add("attnlrp", {Attention: _bound(attnlrp_attention_forward), **_COMMON})
PATCH_MAPS.add("cplrp", {Attention: _bound(cplrp_attention_forward), **_COMMON})

#: instance attributes a patch sets, removed on exit
PATCHED_ATTRIBUTES = ("forward", "original_forward")


@contextmanager
def lrp_patched(model: nn.Module, variant: str) -> Iterator[nn.Module]:
    """The model with every module of `variant`'s patch map patched; each patch removed on exit."""
    patch_map = PATCH_MAPS.get(variant, "variant")
    lxt_module("rules", variant)  # a missing lxt fails here, before anything is patched
    patched: list[nn.Module] = []
    try:
        for module in model.modules():
            kind = next((kind for kind in patch_map if isinstance(module, kind)), None)
            if kind is None:
                continue
            if any(name in vars(module) for name in PATCHED_ATTRIBUTES):
                raise AttributionError(
                    f"model: {type(module).__name__} already has an instance-level forward"
                )
            patched.append(module)
            setattr(module, "forward", patch_map[kind](module))  # noqa: B010 - an instance attribute
        yield model
    finally:
        for module in patched:
            for name in PATCHED_ATTRIBUTES:
                vars(module).pop(name, None)


def lrp_relevance(
    model: nn.Module, images: Tensor, select: Callable[[Tensor], Tensor], variant: str
) -> Tensor:
    """Pixel relevance (B, 3, H, W): images × the modified gradient of Σ select(model(images))."""
    leaf = images.detach().requires_grad_(True)
    with torch.enable_grad(), lrp_patched(model, variant):
        explained = select(model(leaf)).sum()
        (gradient,) = torch.autograd.grad(explained, leaf)
    return leaf.detach() * gradient


class TransformerLRP(Method):
    """One backward pass of lxt's rules on a timm ViT or hybrid; the map is pixel relevance."""

    applies_to: ClassVar[frozenset[str]] = frozenset({"vit", "hybrid"})
    uses_layer: ClassVar[bool] = False
    freeze_parameters: ClassVar[bool] = True
    grid_note: ClassVar[str] = "pixels: input × LRP-modified gradient, summed over RGB (signed)"
    half_precision_refusal: ClassVar[str | None] = LRP_DENOMINATORS
    int8_refusal: ClassVar[str | None] = LRP_ON_INT8

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """Signed pixel relevance of the per-sample target, summed over colour channels."""

        def explained(output: Any) -> Tensor:
            return target.select(select_output(output, self.output_key))

        return lrp_relevance(model, images, explained, self.name).sum(1)


@register_method("attnlrp")
class AttnLRP(TransformerLRP):
    """AttnLRP (Achtibat et al. ICML 2024) through lxt."""

    description = f"AttnLRP (Achtibat et al. ICML 2024) through lxt; pixel relevance (needs {INSTALL_HINT})"


@register_method("cplrp")
class CPLRP(TransformerLRP):
    """CP-LRP (Ali et al. ICML 2022): AttnLRP outside the attention, no relevance through the softmax."""

    description = f"CP-LRP (Ali et al. ICML 2022) through lxt; pixel relevance (needs {INSTALL_HINT})"
