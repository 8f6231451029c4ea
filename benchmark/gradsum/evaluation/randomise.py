"""Model parameter randomisation (Adebayo et al. 2018) as edits of a deep copy, block by block.

A model is cut into *blocks*, ordered from the output down to the input: the head's layers, the
transformer's final norms and blocks, the patch embedding (with the raw class token and positional
embedding that Quantus' MPRT never randomises) and a hybrid's tokenizer stages. `randomised` returns a
copy with the named blocks re-initialised; the caller's model is never touched, so every edit is undone
by dropping the copy. `cascading` randomises the top k blocks cumulatively, `independent` one at a time.

Modules are re-initialised by their own `reset_parameters` (the layers' own initialisers, as in the
paper); parameters that no module initialises (timm's `cls_token` and `pos_embed`) are re-drawn from a
truncated normal of std `RAW_PARAMETER_STD`. Normalisation layers (`NORM_LAYERS`) initialise to the
identity affine map, so their gain and shift are then drawn at random (`NORM_WEIGHT_STD`). Each block draws from its own seed, derived from the
run's seed and the block name, so a block gets the same weights in every cascade step and in the
independent mode, and the global random state is left as it was.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gradsum.errors import UnknownNameError
from gradsum.models import model_family
from gradsum.taxonomy import FamilyRegistry

#: timm's initialisation of a ViT's positional embedding (trunc_normal, std 0.02), used for every raw
#: parameter: the class token is drawn at the same scale instead of timm's near-zero 1e-6, so that a
#: randomised class token is random, not close to a constant
RAW_PARAMETER_STD = 0.02

#: Normalisation layers whose own initialiser is the identity affine map (gain 1, shift 0). Adebayo et al.
#: re-initialise each layer from its own initialiser, which for a learned layer draws a random function.
#: For a norm layer it draws none: it only erases the trained affine, itself close to the identity (trained
#: LayerNorm gains sit near 1), so a "randomised" transformer norm would compute nearly what it did. What
#: the paper means by randomising a layer, a function unrelated to the trained one, is kept by drawing the
#: gain from N(1, NORM_WEIGHT_STD²) and the shift from N(0, NORM_WEIGHT_STD²): each feature is rescaled
#: by a random factor (about 2% flip sign) and shifted by up to about half the normalised feature's spread,
#: while the output keeps the unit scale that the layers above expect.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)
NORM_WEIGHT_STD = 0.5

#: modules whose children are blocks of their own (a CNN's stage list, a ViT's `blocks`)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class Block:
    """One unit of randomisation: module paths re-initialised by `reset_parameters`, and raw parameters."""

    name: str
    modules: tuple[str, ...]
    #: paths of parameters that no module initialises, re-drawn from trunc_normal(std=RAW_PARAMETER_STD)
    parameters: tuple[str, ...] = ()


BlockRule = Callable[[nn.Module], list[Block]]

#: model family (`gradsum.models.model_family`) → the rule that cuts a model of that family into blocks
BLOCK_RULES: FamilyRegistry[BlockRule] = FamilyRegistry("randomisation block rule")


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _children_top_down(
    module: nn.Module, prefix: str = "", skip: Sequence[str] = (), open_containers: bool = True
) -> list[Block]:
    """`module`'s children with parameters, last first; a container's children are blocks of their own.

    Only one level is opened, so a conv stage (Conv → BN → ELU) or a transformer block stays whole.
    """
    blocks: list[Block] = []
    for name, child in reversed(list(module.named_children())):
        if name in skip or not _has_parameters(child):
            continue
        path = _join(prefix, name)
        if open_containers and isinstance(child, _CONTAINERS):
            blocks += _children_top_down(child, path, open_containers=False)
        else:
            blocks.append(Block(path, (path,)))
    return blocks


def _raw_parameters(model: nn.Module) -> tuple[str, ...]:
    """The model's own parameters (timm: `cls_token`, `pos_embed`, register tokens)."""
    return tuple(name for name, _ in model.named_parameters(recurse=False))


@BLOCK_RULES.register("cnn")
def _cnn_blocks(model: nn.Module) -> list[Block]:
    """Head layers (last first), then conv stages top-down: `head.7`, …, `head.1`, `features.4`, …"""
    return _children_top_down(model)


@BLOCK_RULES.register("vit")
def _vit_blocks(model: nn.Module) -> list[Block]:
    """`head`, `fc_norm`, `norm`, `blocks.{n-1}` … `blocks.0`, then the patch embedding with its tokens."""
    top = _children_top_down(model, skip=("patch_embed",))
    return [*top, Block("patch_embed", ("patch_embed",), _raw_parameters(model))]


@BLOCK_RULES.register("hybrid")
def _hybrid_blocks(model: nn.Module) -> list[Block]:
    """As a ViT down to the blocks; then the embedding's projection with the tokens; then the tokenizer.

    The projection (and its tokens) comes before the tokenizer because it sits above it in the forward
    pass: the cascade keeps walking from the output to the input.
    """
    top = _children_top_down(model, skip=("patch_embed",))
    embed = model.get_submodule("patch_embed")
    projection = tuple(
        _join("patch_embed", name)
        for name, child in embed.named_children()
        if name != "backbone" and _has_parameters(child)
    )
    name = projection[0] if len(projection) == 1 else "patch_embed"
    tokenizer = _children_top_down(
        embed.get_submodule("backbone"), "patch_embed.backbone", open_containers=False
    )
    return [*top, Block(name, projection, _raw_parameters(model)), *tokenizer]


def randomisation_blocks(model: nn.Module) -> list[Block]:
    """The model's blocks from the output down to the input, by the rule of its family."""
    return BLOCK_RULES.get(model_family(model), "model family")(model)


def block_seed(seed: int, name: str) -> int:
    """The seed one block draws from: the run's `seed` and the block name, independent of other blocks."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _randomise_norm(module: nn.Module) -> None:
    """A norm layer's affine drawn at random after its reset (see `NORM_LAYERS`); running statistics keep
    their reset values (mean 0, variance 1)."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    with torch.no_grad():
        if isinstance(weight, torch.Tensor):
            nn.init.normal_(weight, mean=1.0, std=NORM_WEIGHT_STD)
        if isinstance(bias, torch.Tensor):
            nn.init.normal_(bias, mean=0.0, std=NORM_WEIGHT_STD)


def _reinitialise(model: nn.Module, block: Block) -> None:
    raw = [model.get_parameter(path) for path in block.parameters]
    for path in block.modules:
        for module in model.get_submodule(path).modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                if isinstance(module, NORM_LAYERS):
                    _randomise_norm(module)
            else:
                raw += list(module.parameters(recurse=False))
    with torch.no_grad():
        for parameter in raw:
            nn.init.trunc_normal_(parameter, std=RAW_PARAMETER_STD)


def randomised(model: nn.Module, blocks: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of `model` with exactly the named blocks re-initialised; `model` stays as it was."""
    known = {block.name: block for block in randomisation_blocks(model)}
    unknown = [name for name in blocks if name not in known]
    if unknown:
        raise UnknownNameError(
            f"blocks: {type(model).__name__} has no randomisation block {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(known)}"
        )
    copied = copy.deepcopy(model)
    devices = sorted({p.device.index or 0 for p in copied.parameters() if p.device.type == "cuda"})
    # fork_rng restores the global (and CUDA) random state, so a run's other draws are unaffected
    with torch.random.fork_rng(devices=devices):
        for name in dict.fromkeys(blocks):
            torch.manual_seed(block_seed(seed, name))
            _reinitialise(copied, known[name])
    return copied


def _is_within(path: str, ancestor: str) -> bool:
    return ancestor == "" or path == ancestor or path.startswith(f"{ancestor}.")


def depth_to(model: nn.Module, paths: Sequence[str]) -> int:
    """How many top blocks a cascade randomises down to and including the layers at `paths`.

    A block counts when it holds one of the layers, lies inside one, or sits above it in the forward pass,
    taken as the models' definition order (`named_modules`): true of every family here (timm ViTs and
    `ConvRegressor` define their modules input first). The depth reaches the deepest such block, so a layer
    in a parameter-free module (a Flatten) is randomised from the output down to the block above it.
    """
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    unknown = [path for path in paths if path not in order]
    if unknown:
        raise UnknownNameError(f"layer: {type(model).__name__} has no module {', '.join(map(repr, unknown))}")
    blocks = randomisation_blocks(model)
    deepest = -1
    for index, block in enumerate(blocks):
        for path in paths:
            above = any(
                _is_within(path, module) or _is_within(module, path) or order[module] > order[path]
                for module in block.modules
            )
            if above:
                deepest = index
    if deepest < 0:
        raise UnknownNameError(
            f"layer: no randomisation block of {type(model).__name__} is at or above {', '.join(paths)}"
        )
    return deepest + 1


def _top(model: nn.Module, depth: int | None) -> list[Block]:
    blocks = randomisation_blocks(model)
    return blocks if depth is None else blocks[:depth]


def cascade_names(model: nn.Module, depth: int | None = None) -> list[str]:
    """The names of the top `depth` blocks (None: every block), output first: what cascade step k randomises
    is the first k of them."""
    return [block.name for block in _top(model, depth)]


def cascading(model: nn.Module, depth: int | None = None, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(block, copy with the top k blocks randomised) for k = 1 … `depth` (None: every block)."""
    names = cascade_names(model, depth)
    for k, name in enumerate(names, start=1):
        yield name, randomised(model, names[:k], seed)


def independent(model: nn.Module, depth: int | None = None, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """(block, copy with only that block randomised) for each of the top `depth` blocks (None: all)."""
    for block in _top(model, depth):
        yield block.name, randomised(model, [block.name], seed)
