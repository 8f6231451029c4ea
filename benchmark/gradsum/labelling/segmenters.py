"""Segmenter architectures, and the segmenter folder and YAML spec that `load_segmenter` reads.

A segmenter folder is `card.json` + `model.safetensors`, like a model folder: the card says which
Cityscapes class each output channel is, the input size, the normalisation and the held-out metrics. A
segmenter trained elsewhere is described by a `segmenter.yaml` naming its architecture, its state-dict file,
its classes (Cityscapes names or labelIds, one per output channel), its input size and optionally its
normalisation. Every architecture is a torchvision builder called with `weights=None,
weights_backbone=None`: nothing downloads, all weights come from the folder or the user's file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn
from torchvision.models import segmentation

from gradsum.contract import CARD, WEIGHTS
from gradsum.dataspec import load_yaml
from gradsum.errors import CheckpointError, GradSUMError, SpecError, UnknownNameError
from gradsum.fileio import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    read_json_object,
    sha256_file,
)
from gradsum.labelling.segmenter import Segmenter
from gradsum.models.checkpoints import read_state_dict, state_dict_mismatches
from gradsum.models.inputs import INPUT_TRANSFORM
from gradsum.registry import Registry
from gradsum.truthsets.labels import cityscapes_class
from gradsum.utils import library_versions

#: The card field of a segmenter loaded from a `segmenter.yaml`: the spec and the checkpoint it names.
SOURCE = "source"
#: The file that describes a segmenter trained elsewhere (in place of a card).
SEGMENTER_SPEC = "segmenter.yaml"
#: The spec's fields: required, then optional.
SPEC_REQUIRED = ("architecture", "weights", "classes", "input_size")
SPEC_OPTIONAL = ("mean", "std")
#: The architecture `gradsum train-segmenter` trains unless told otherwise: small and fast on a CPU.
DEFAULT_ARCHITECTURE = "lraspp_mobilenet_v3_large"
#: State-dict prefix of torchvision's auxiliary head, used only as a training loss: dropped on load.
AUX_PREFIX = "aux_classifier."


@dataclass(frozen=True)
class SegmenterArchitecture:
    """A builder of a segmentation network with `num_classes` output channels, and the state-dict keys of
    its last layers, whose first dimension is the number of classes."""

    build: Callable[[int], nn.Module]
    heads: tuple[str, ...]


#: name → segmentation architecture (torchvision builders, never with downloaded weights)
SEGMENTER_ARCHITECTURES: Registry[SegmenterArchitecture] = Registry("segmenter architecture")


def _torchvision(builder: Callable[..., nn.Module]) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return builder(weights=None, weights_backbone=None, num_classes=num_classes)

    return build


for _name, _heads in {
    "lraspp_mobilenet_v3_large": ("classifier.low_classifier.weight", "classifier.high_classifier.weight"),
    "deeplabv3_mobilenet_v3_large": ("classifier.4.weight",),
    "fcn_resnet50": ("classifier.4.weight",),
    "deeplabv3_resnet50": ("classifier.4.weight",),
}.items():
    SEGMENTER_ARCHITECTURES.add(
        _name, SegmenterArchitecture(_torchvision(getattr(segmentation, _name)), _heads)
    )


class SegmentationNet(nn.Module):
    """Images in [0, 1] → normalised → a segmentation network → logits (B, K, h, w).

    The normalisation is not part of the saved state: the card records it, so the weights file is the bare
    network's state dict, the same a `segmenter.yaml` loads.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net((images - self.mean) / self.std)
        # torchvision's segmentation models return {'out': logits, 'aux': ...}
        return out["out"] if isinstance(out, Mapping) else out


def build_segmenter(
    architecture: str,
    classes: Sequence[int],
    input_size: tuple[int, int],
    *,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    card: Mapping[str, Any] | None = None,
) -> Segmenter:
    """A freshly initialised segmenter of `architecture` with one output channel per Cityscapes id."""
    entry = SEGMENTER_ARCHITECTURES.get(architecture, "architecture")
    module = SegmentationNet(entry.build(len(classes)), mean, std).eval()
    return Segmenter(
        module,
        tuple(int(c) for c in classes),
        (int(input_size[0]), int(input_size[1])),
        architecture,
        card or {},
    )


def save_segmenter(segmenter: Segmenter, folder: str | Path, *, overwrite: bool = False) -> Mapping[str, Any]:
    """Write the segmenter folder (`card.json` + `model.safetensors`) atomically; returns the card.

    The card is the segmenter's own card (metrics, training settings) with what the folder needs to load:
    architecture, class names in channel order, input size, normalisation and the weights' checksum.
    """
    module = segmenter.module
    if not isinstance(module, SegmentationNet):
        raise CheckpointError(
            f"{folder}: only segmenters built from SEGMENTER_ARCHITECTURES can be saved, got a {type(module).__name__}"
        )
    payload = safetensors.torch.save(
        {key: value.detach().to("cpu").contiguous().clone() for key, value in module.net.state_dict().items()}
    )
    card = {
        **segmenter.card,
        "architecture": segmenter.architecture,
        "classes": [cityscapes_class(c).name for c in segmenter.classes],
        "input_size": list(segmenter.input_size),
        "normalisation": {"mean": module.mean.flatten().tolist(), "std": module.std.flatten().tolist()},
        "input_transform": INPUT_TRANSFORM,
        "libraries": library_versions(),
        "weights_sha256": hashlib.sha256(payload).hexdigest(),
    }
    try:
        with atomic_directory(folder, overwrite=overwrite) as staging:
            atomic_write_bytes(staging / WEIGHTS, payload)
            atomic_write_json(staging / CARD, card)
    except FileExistsError:
        raise CheckpointError(f"{folder}: already exists; choose another folder or remove it") from None
    return card


def load_segmenter(path: str | Path) -> Segmenter:
    """A segmenter from its folder (`card.json` + `model.safetensors`), or from a `segmenter.yaml` (the file
    or a folder holding it) describing a checkpoint trained elsewhere. Returned on the CPU, in eval mode."""
    source = Path(path)
    if source.is_dir() and (source / CARD).is_file():
        return _from_folder(source)
    if source.is_dir() and (source / SEGMENTER_SPEC).is_file():
        return _from_spec(source / SEGMENTER_SPEC)
    if source.is_file() and source.suffix.lower() in (".yaml", ".yml"):
        return _from_spec(source)
    if not source.exists():
        raise CheckpointError(f"{source}: no such segmenter folder or {SEGMENTER_SPEC}")
    raise CheckpointError(
        f"{source}: not a segmenter: expected a folder with {CARD} + {WEIGHTS}, or a {SEGMENTER_SPEC} "
        "(architecture, weights, classes, input_size)"
    )


def _from_folder(folder: Path) -> Segmenter:
    card_path = folder / CARD
    card = read_json_object(card_path, CheckpointError, "segmenter card")
    missing = [
        name for name in ("architecture", "classes", "input_size", "normalisation") if name not in card
    ]
    if missing:
        raise CheckpointError(f"{card_path}: missing field(s) {', '.join(missing)}")
    normalisation = card["normalisation"]
    if not isinstance(normalisation, Mapping):
        raise CheckpointError(f"{card_path}: normalisation: expected a mapping with mean and std")
    weights = folder / WEIGHTS
    state = read_state_dict(weights)
    expected = card.get("weights_sha256")
    if expected and sha256_file(weights) != expected:
        raise CheckpointError(
            f"{weights}: weights differ from those {card_path} was written for (weights_sha256 does not match)"
        )
    return _assemble(
        architecture=card["architecture"],
        classes=_classes(card["classes"], f"{card_path}: classes"),
        input_size=_input_size(card["input_size"], f"{card_path}: input_size"),
        mean=_triple(normalisation.get("mean"), f"{card_path}: normalisation.mean"),
        std=_triple(normalisation.get("std"), f"{card_path}: normalisation.std"),
        state=state,
        where=str(card_path),
        weights=weights,
        card=card,
    )


def _from_spec(spec_path: Path) -> Segmenter:
    spec = load_yaml(spec_path, SpecError)
    unknown = sorted(set(spec) - set(SPEC_REQUIRED) - set(SPEC_OPTIONAL))
    if unknown:
        raise SpecError(
            f"{spec_path}: unknown field(s) {', '.join(unknown)}; valid: {', '.join(SPEC_REQUIRED + SPEC_OPTIONAL)}"
        )
    missing = [name for name in SPEC_REQUIRED if name not in spec]
    if missing:
        raise SpecError(f"{spec_path}: missing field(s) {', '.join(missing)}")
    if not isinstance(spec["weights"], str):
        raise SpecError(
            f"{spec_path}: weights: expected the path of a state-dict file, got {spec['weights']!r}"
        )
    weights = spec_path.parent / spec["weights"]
    try:
        state = read_state_dict(weights)
    except CheckpointError as error:
        raise CheckpointError(f"{spec_path}: weights: {error}") from None
    mean = _triple(spec.get("mean", IMAGENET_DEFAULT_MEAN), f"{spec_path}: mean")
    std = _triple(spec.get("std", IMAGENET_DEFAULT_STD), f"{spec_path}: std")
    if min(std) <= 0:
        raise SpecError(
            f"{spec_path}: std: every channel's standard deviation must be positive, got {list(std)}"
        )
    classes = _classes(spec["classes"], f"{spec_path}: classes")
    input_size = _input_size(spec["input_size"], f"{spec_path}: input_size")
    card = {
        "architecture": spec["architecture"],
        "classes": [cityscapes_class(c).name for c in classes],
        "input_size": list(input_size),
        "normalisation": {"mean": list(mean), "std": list(std)},
        SOURCE: {"spec": str(spec_path), "weights": str(weights)},
    }
    return _assemble(
        spec["architecture"], classes, input_size, mean, std, state, str(spec_path), weights, card
    )


def _assemble(
    architecture: object,
    classes: tuple[int, ...],
    input_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    state: Mapping[str, torch.Tensor],
    where: str,
    weights: Path,
    card: Mapping[str, Any],
) -> Segmenter:
    """Build the architecture, check the state dict fits it (channels first, then keys and shapes), load it."""
    if not isinstance(architecture, str) or architecture not in SEGMENTER_ARCHITECTURES:
        raise UnknownNameError(
            f"{where}: architecture: {SEGMENTER_ARCHITECTURES.unknown_message(str(architecture))}"
        )
    entry = SEGMENTER_ARCHITECTURES.get(architecture)
    state = {key: value for key, value in state.items() if not key.startswith(AUX_PREFIX)}
    for head in entry.heads:
        if head in state and state[head].shape[0] != len(classes):
            raise CheckpointError(
                f"{where}: classes: {len(classes)} entries, but {weights.name} has {state[head].shape[0]} output "
                f"channels ({head}); list one class per channel"
            )
    segmenter = build_segmenter(architecture, classes, input_size, mean=mean, std=std, card=card)
    assert isinstance(segmenter.module, SegmentationNet)  # build_segmenter's module
    if problems := state_dict_mismatches(segmenter.module.net.state_dict(), state):
        raise CheckpointError(
            f"{where}: {weights.name} does not fit architecture {architecture!r}: {'; '.join(problems[:3])}"
        )
    segmenter.module.net.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    )
    return segmenter


def _classes(entries: object, where: str) -> tuple[int, ...]:
    """Cityscapes ids from a list of class names or labelIds, one per output channel."""
    if not isinstance(entries, list) or not entries:
        raise SpecError(
            f"{where}: expected a list of Cityscapes class names or labelIds, one per output channel"
        )
    ids = []
    for index, entry in enumerate(entries):
        if isinstance(entry, bool) or not isinstance(entry, str | int):
            raise SpecError(f"{where}[{index}]: expected a Cityscapes class name or labelId, got {entry!r}")
        try:
            ids.append(cityscapes_class(entry).id)
        except GradSUMError as error:
            raise SpecError(f"{where}[{index}]: {error}") from None
    if len(set(ids)) != len(ids):
        repeated = sorted({cityscapes_class(i).name for i in ids if ids.count(i) > 1})
        raise SpecError(f"{where}: class(es) {', '.join(repeated)} listed twice; one channel per class")
    return tuple(ids)


def _input_size(value: object, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise SpecError(f"{where}: expected [height, width], two positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def _triple(value: object, where: str) -> tuple[float, ...]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise SpecError(f"{where}: expected three numbers (one per RGB channel), got {value!r}")
    return tuple(float(v) for v in value)
