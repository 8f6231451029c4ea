"""Compressed variants of a model folder, each a model folder of its own with a card saying how it was made.

Every method is PyTorch's own tool, registered in `COMPRESSIONS`:

- `int8_dynamic`: dynamic int8 quantisation of every `nn.Linear` (`torch.ao.quantization.quantize_dynamic`);
  gradients pass straight through the dequantised weights (`gradsum.models.int8`). No level. CPU only.
- `magnitude`: global unstructured L1 pruning over every Conv2d and Linear weight at once
  (`torch.nn.utils.prune.global_unstructured`, then `prune.remove`); level = the fraction of those weights
  zeroed.
- `channels`: structured L2 pruning of each Conv2d's output channels (`prune.ln_structured`, n=2, dim=0);
  level = the fraction of each layer's output channels zeroed (their biases stay). A model without a
  Conv2d is refused.

Pruned weights are stored dense, so a pruned folder is as large on disk as its parent; an int8 folder is
smaller. The compressed card keeps the parent's spec, task and training record, and adds `compression`:
the method, level, parent folder and weights' SHA-256, the measured sparsity, the parameter count, the
weight file's bytes (and the parent's), and the parent's metrics re-measured beside the compressed model's
on the same split, so the two are comparable however the parent's card was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from gradsum.contract import CARD
from gradsum.errors import SpecError, TrainingError
from gradsum.fileio import atomic_directory, sha256_file
from gradsum.models.checkpoints import ModelCard, load_model, save_model, state_dict_bytes, weights_file
from gradsum.models.int8 import CPU_ONLY, INT8_LAYERS, Int8Linear, is_quantised, quantise_linears
from gradsum.models.tasks import TRAINING_TASKS, Metrics
from gradsum.models.training import SplitData, evaluate, open_splits, preload
from gradsum.registry import Registry
from gradsum.utils import library_versions, resolve_device

#: the layers whose weights pruning may zero, and whose zeros `sparsity` counts
PRUNABLE = (nn.Conv2d, nn.Linear)
#: the splits the metrics are measured on, first found first (training scores on `val` without `test`)
MEASURED_SPLITS = ("test", "val")

#: compress a module in place at a level (None for methods without one); `name` names the model in
#: messages; returns the method's own figures for the card's record
Apply = Callable[[nn.Module, float | None, str], dict[str, Any]]


@dataclass(frozen=True)
class Compression:
    """One compression method: what it does, how it is applied, its levels and where it runs."""

    description: str
    apply: Apply
    #: what `compress_variants` makes when no levels are named; (None,) for a method without levels
    default_levels: tuple[float | None, ...]
    #: what a level means, for messages and the CLI's help
    level_meaning: str = ""
    #: why the method cannot run off the CPU (None: it runs anywhere)
    cpu_only: str | None = None

    @property
    def takes_level(self) -> bool:
        """Whether the method is applied at a level in (0, 1)."""
        return self.default_levels != (None,)


COMPRESSIONS: Registry[Compression] = Registry("compression method")


def _quantise(model: nn.Module, level: float | None, name: str) -> dict[str, Any]:
    names = quantise_linears(model)
    if not names:
        raise SpecError(f"{name}: method int8_dynamic quantises linear layers, and {name} has none")
    return {
        INT8_LAYERS: names,
        "engine": torch.backends.quantized.engine,
        "scheme": "qint8 weights, per-tensor symmetric scale; activations quantised per batch (dynamic)",
        "backward": "straight-through: the input gradient through the dequantised weights",
    }


def _prune_magnitude(model: nn.Module, level: float | None, name: str) -> dict[str, Any]:
    targets = [(module, "weight") for module in model.modules() if isinstance(module, PRUNABLE)]
    if not targets:
        raise SpecError(f"{name}: method magnitude prunes Conv2d and Linear weights, and {name} has none")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=level)
    for module, parameter in targets:
        prune.remove(module, parameter)
    return {"layers": len(targets)}


def _prune_channels(model: nn.Module, level: float | None, name: str) -> dict[str, Any]:
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise SpecError(
            f"{name}: method channels prunes the output channels of Conv2d layers, and {name} has no Conv2d; "
            "use magnitude or int8_dynamic"
        )
    for conv in convs:
        prune.ln_structured(conv, "weight", amount=level, n=2, dim=0)
        prune.remove(conv, "weight")
    zeroed = sum(int((conv.weight.detach().flatten(1).abs().sum(1) == 0).sum()) for conv in convs)
    return {
        "layers": len(convs),
        "channels": sum(conv.out_channels for conv in convs),
        "channels_zeroed": zeroed,
    }


COMPRESSIONS.add(
    "int8_dynamic",
    Compression(
        "dynamic int8 quantisation of every linear layer (torch quantize_dynamic; straight-through backward)",
        _quantise,
        (None,),
        cpu_only=CPU_ONLY,
    ),
)
COMPRESSIONS.add(
    "magnitude",
    Compression(
        "global unstructured L1 pruning of every Conv2d and Linear weight (torch prune.global_unstructured)",
        _prune_magnitude,
        (0.5, 0.7, 0.9),
        "the fraction of all Conv2d and Linear weights zeroed",
    ),
)
COMPRESSIONS.add(
    "channels",
    Compression(
        "structured L2 pruning of each Conv2d's output channels (torch prune.ln_structured, n=2, dim=0)",
        _prune_channels,
        (0.25, 0.5),
        "the fraction of each Conv2d's output channels zeroed",
    ),
)


def check_level(method: str, level: float | None, argument: str = "level") -> Compression:
    """The method named, once `level` is checked to suit it; bad input names `argument`."""
    compression = COMPRESSIONS.get(method, "method")
    if not compression.takes_level:
        if level is not None:
            raise SpecError(f"{argument}: method {method} takes no level (it has one setting), got {level}")
        return compression
    if level is None or isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise SpecError(
            f"{argument}: method {method} needs a level strictly between 0 and 1 ({compression.level_meaning}), "
            f"got {level}"
        )
    return compression


def compressible_weights(model: nn.Module) -> list[Tensor]:
    """The Conv2d and Linear weights (int8 layers' dequantised), as float tensors."""
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, PRUNABLE)]
    return weights + [m.dequantised() for m in model.modules() if isinstance(m, Int8Linear)]


def sparsity(model: nn.Module) -> float:
    """The fraction of the Conv2d and Linear weights that are exactly zero."""
    weights = compressible_weights(model)
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total if total else 0.0


def variant_name(parent: str, method: str, level: float | None) -> str:
    """The folder name of a variant: `<parent>_<method>` and, for a method with levels, `_<level>`."""
    return f"{parent}_{method}" if level is None else f"{parent}_{method}_{level:g}"


@dataclass
class _Parent:
    """The uncompressed model, read once, and the split both it and its variants are measured on."""

    folder: Path
    card: ModelCard
    split: str
    data: SplitData
    metrics: Metrics
    device: str


def _measure(model: nn.Module, parent: _Parent) -> Metrics:
    _, metrics = evaluate(model, parent.data, TRAINING_TASKS.get(parent.card.task), parent.device)
    return metrics


def _read_parent(model_folder: str | Path, truthset: str | Path | None, device: str) -> _Parent:
    folder = Path(model_folder)
    model, card = load_model(folder)
    if is_quantised(model):
        # pruning would reach only its float layers, and int8 layers cannot be quantised again
        raise SpecError(
            f"model: {folder} has int8 layers already ({card.compression.get('method')} of "
            f"{card.compression.get('parent')}); compress the float model"
        )
    root = truthset if truthset is not None else card.truthset.get("root")
    if root is None or not Path(root).is_dir():
        named = "given" if truthset is not None else f"that {folder / CARD} records (truthset.root)"
        raise SpecError(
            f"truthset: {root}, the truth set {named}, is not a folder; name the truth set whose test split "
            "scores the compressed model (--truthset)"
        )
    try:
        splits = open_splits(root, card.task)
    except TrainingError as error:
        raise SpecError(f"truthset: {error}") from None
    split = next((name for name in MEASURED_SPLITS if name in splits), None)
    if split is None:
        raise SpecError(f"truthset: {root} has no {' or '.join(MEASURED_SPLITS)} split to measure on")
    data = preload(splits[split], card.task, card.model_spec(str(folder)).img_size)
    parent = _Parent(folder, card, split, data, {}, device)
    parent.metrics = _measure(model.to(device), parent)
    return parent


def _check_device(compression: Compression, method: str, device: str) -> str:
    # refused before the device is resolved, so the reason is the method's even where no GPU is present
    if compression.cpu_only is not None and device.partition(":")[0] != "cpu":
        raise SpecError(
            f"device {device!r}: method {method} runs on the CPU only: {compression.cpu_only}; use cpu"
        )
    return resolve_device(device)


def _write_variant(parent: _Parent, method: str, level: float | None, out: Path) -> Path:
    model, _ = load_model(parent.folder)
    figures = COMPRESSIONS.get(method).apply(model, level, parent.card.name or parent.folder.name)
    model.eval()
    metrics = _measure(model.to(parent.device), parent)
    model = model.cpu()
    parent_weights = weights_file(parent.folder)
    record = {
        "method": method,
        "level": level,
        "parent": str(parent.folder),
        "parent_sha256": sha256_file(parent_weights),
        "sparsity": sparsity(model),
        "parameters": sum(t.numel() for t in model.state_dict().values()),
        "bytes": len(state_dict_bytes(model)),
        "parent_bytes": parent_weights.stat().st_size,
        "metrics_split": parent.split,
        "parent_metrics": parent.metrics,
        # a variant of a variant (int8 after pruning) keeps how its parent was made
        "parent_compression": parent.card.compression,
        **figures,
    }
    spec = dict(parent.card.spec)
    note = f"{method}{'' if level is None else f' at {level:g}'} by gradsum compress (see the card's compression)"
    spec["description"] = f"{spec['description']}; {note}" if spec.get("description") else note
    card = dataclasses.replace(
        parent.card, spec=spec, metrics=metrics, compression=record, libraries=library_versions()
    )
    # the folder appears whole or not at all
    with atomic_directory(out, overwrite=True) as staging:
        save_model(model, card, staging)
    return out


def compress_model(
    model_folder: str | Path,
    method: str,
    level: float | None,
    out: str | Path,
    *,
    truthset: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Write the model folder at `model_folder` compressed by `method` at `level` into the folder `out`.

    The card's `metrics` are measured on the test split (else val) of the parent's truth set (its card's
    `truthset.root`, or `truthset`), the parent's beside them in `compression.parent_metrics`.
    Returns `out`.
    """
    compression = check_level(method, level)
    resolved = _check_device(compression, method, device)
    parent = _read_parent(model_folder, truthset, resolved)
    return _write_variant(parent, method, level, Path(out))


def compress_variants(
    model_folder: str | Path,
    method: str,
    levels: Sequence[float] | None,
    out_root: str | Path,
    *,
    truthset: str | Path | None = None,
    device: str = "cpu",
) -> list[Path]:
    """One compressed folder per level (None: the method's default levels), each
    `<out_root>/<parent folder name>_<method>_<level>` (`_<level>` only for methods with levels).

    Every level is checked before anything is written; the parent and its split are read once.
    """
    compression = COMPRESSIONS.get(method, "method")
    chosen: tuple[float | None, ...] = tuple(levels) if levels else compression.default_levels
    for level in chosen:
        check_level(method, level, "levels")
    resolved = _check_device(compression, method, device)
    parent = _read_parent(model_folder, truthset, resolved)
    root = Path(out_root)
    return [
        _write_variant(parent, method, level, root / variant_name(parent.folder.name, method, level))
        for level in chosen
    ]
