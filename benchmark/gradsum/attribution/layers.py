"""Target layers by module path, with per-family defaults and the hybrid's named views.

A layer is named by its module path (`features.4`, `layer4.1`, `blocks.3.norm1`,
`patch_embed.backbone.4`). Hybrids also accept `tokenizer` (the CNN tokenizer's last stage, 4-D),
`transformer` (`blocks[-1].norm1`, the full-model view and the hybrid default) and `both`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from gradsum.errors import AttributionError
from gradsum.models import cam_layer, model_family, tokenizer
from gradsum.taxonomy import FamilyRegistry


@dataclass(frozen=True)
class LayerChoice:
    """The resolved layer(s): the name recorded with results and the module paths hooked."""

    name: str
    paths: tuple[str, ...]


def module_path(model: nn.Module, module: nn.Module) -> str:
    """The dotted path of `module` inside `model`."""
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise AttributionError(f"layer: {type(module).__name__} is not a submodule of {type(model).__name__}")


def _tokenizer_path(model: nn.Module) -> str:
    # the last stage of the tokenizer CNN makes its output map
    backbone = tokenizer(model)
    children = list(backbone.children())
    return module_path(model, children[-1] if children else backbone)


def _transformer_path(model: nn.Module) -> str:
    # the last block's own output feeds only the class token, so its patch tokens get zero gradient
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not len(blocks):
        raise AttributionError(f"layer: {type(model).__name__} has no transformer blocks")
    return f"blocks.{len(blocks) - 1}.norm1"


def _cnn_path(model: nn.Module) -> str:
    return module_path(model, cam_layer(model))


#: family → the module path a layer-reading method hooks when none is named
DEFAULTS: FamilyRegistry[Callable[[nn.Module], str]] = FamilyRegistry("default layer")
DEFAULTS.add("cnn", _cnn_path)
DEFAULTS.add("vit", _transformer_path)
DEFAULTS.add("hybrid", _transformer_path)

#: named views that stand for one or more module paths
VIEWS: dict[str, tuple[frozenset[str], Callable[[nn.Module], tuple[str, ...]]]] = {
    "tokenizer": (frozenset({"hybrid"}), lambda m: (_tokenizer_path(m),)),
    "transformer": (frozenset({"vit", "hybrid"}), lambda m: (_transformer_path(m),)),
    "both": (frozenset({"hybrid"}), lambda m: (_tokenizer_path(m), _transformer_path(m))),
}


def resolve_layer(model: nn.Module, layer: str | None) -> LayerChoice:
    """The layer(s) to hook: the family default for None, a named view, or a module path."""
    kind = model_family(model)
    if layer is None:
        path = DEFAULTS.get(kind)(model)
        return LayerChoice(path, (path,))
    if layer in VIEWS:
        families, paths = VIEWS[layer]
        if kind not in families:
            raise AttributionError(f"layer: {layer!r} applies to {'/'.join(sorted(families))}, not {kind}")
        return LayerChoice(layer, paths(model))
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise AttributionError(f"layer: {type(model).__name__} has no module {layer!r}{hint}")
    return LayerChoice(layer, (layer,))


def modules_of(model: nn.Module, choice: LayerChoice) -> list[nn.Module]:
    """The modules behind a resolved layer choice."""
    return [model.get_submodule(path) for path in choice.paths]
