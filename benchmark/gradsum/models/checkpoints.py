"""Safe checkpoints: weights in safetensors plus a JSON model card; loading never runs code from a file.

`.safetensors` is read directly; `.pt`/`.pth` only through `torch.load(..., weights_only=True)`; any
other file (pickles, unknown suffixes) is refused. Weights saved in float16/bfloat16 are cast to the
requested dtype (float32 by default) on load, so attribution always runs in float32.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from gradsum.errors import CheckpointError
from gradsum.fileio import atomic_write_bytes, atomic_write_json, read_json_object, sha256_file
from gradsum.models.architectures import WEIGHT_ARGUMENTS, build_model
from gradsum.models.specs import ModelSpec
from gradsum.utils import library_versions

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CARD = "card.json"
#: keys under which `.pt` files commonly nest their state dict
NESTED_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass
class ModelCard:
    """What a checkpoint is: its spec, task, truth set, split sizes, metrics and how it was trained."""

    spec: dict[str, Any]
    task: str
    truthset: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)
    seed: int = 0
    epochs_run: int = 0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    shuffled_labels: bool = False
    training_seconds: float = 0.0
    device: str = "cpu"
    dtype: str = "float32"
    #: SHA-256 of the weight file, so a card never vouches for weights from another (interrupted) save
    weights_sha256: str = ""
    libraries: dict[str, str] = field(default_factory=library_versions)
    format_version: int = 1

    @property
    def name(self) -> str:
        """The spec's name."""
        return str(self.spec.get("name", ""))

    def model_spec(self, source: str = CARD) -> ModelSpec:
        """The card's spec as a `ModelSpec`."""
        return ModelSpec.from_dict(self.spec, source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = CARD) -> ModelCard:
        """Read a card dict, refusing unknown fields by name."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown model-card field {unknown[0]!r}")
        for required in ("spec", "task"):
            if required not in data:
                raise CheckpointError(f"{source}: model card lacks field {required!r}")
        return cls(**dict(data))


def card_for(spec: ModelSpec, task: str | None = None) -> ModelCard:
    """A minimal card for an untrained (or externally trained) model of `spec`."""
    return ModelCard(spec=spec.to_dict(), task=task or spec.task, seed=spec.train.seed)


def read_card(path: str | Path) -> ModelCard:
    """Load `card.json` (or the card inside a checkpoint folder)."""
    source = Path(path)
    if source.is_dir():
        source = source / CARD
    data = read_json_object(source, CheckpointError, "model card")
    return ModelCard.from_dict(data, str(source))


def state_dict_bytes(module: nn.Module, dtype: torch.dtype | None = None) -> bytes:
    """The module's state dict as safetensors bytes, floating tensors cast to `dtype` when given."""
    tensors = {}
    for key, value in module.state_dict().items():
        tensor = value.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        # clone: safetensors refuses tensors that share storage (tied or viewed weights)
        tensors[key] = tensor.contiguous().clone()
    return safetensors.torch.save(tensors)


def save_model(
    module: nn.Module, spec_or_card: ModelSpec | ModelCard, out: str | Path, dtype: torch.dtype | None = None
) -> ModelCard:
    """Write `out/model.safetensors` and `out/card.json` atomically (weights first, card last)."""
    card = card_for(spec_or_card) if isinstance(spec_or_card, ModelSpec) else spec_or_card
    card.dtype = str(dtype or next(module.parameters()).dtype).removeprefix("torch.")
    folder = Path(out)
    payload = state_dict_bytes(module, dtype)
    card.weights_sha256 = hashlib.sha256(payload).hexdigest()
    atomic_write_bytes(folder / WEIGHTS, payload)
    atomic_write_json(folder / CARD, card.to_dict())
    return card


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` or tensors-only `.pt`/`.pth` file; anything else is refused."""
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"{source}: no such checkpoint file")
    reader = _READERS.get(source.suffix.lower())
    if reader is None:
        raise CheckpointError(
            f"{source}: refused: only .safetensors and tensors-only .pt/.pth files are loaded, "
            f"because other formats (pickle, {source.suffix or 'no suffix'}) can execute code on load"
        )
    return reader(source)


def _read_safetensors(source: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(str(source), device="cpu")
    except Exception as error:  # the safetensors reader raises several unrelated types on bad bytes
        raise CheckpointError(f"{source}: corrupt safetensors file ({error})") from None


def _read_torch(source: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).splitlines()[0]
        raise CheckpointError(
            f"{source}: refused: the file holds Python objects beyond tensors, and loading them could "
            f"execute code; save a state dict of tensors or use safetensors ({first})"
        ) from None
    except Exception as error:  # truncated zip, wrong magic number, ...
        raise CheckpointError(f"{source}: corrupt checkpoint ({type(error).__name__}: {error})") from None
    for key in NESTED_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{source}: not a state dict of tensors")
    return data


_READERS = {".safetensors": _read_safetensors, ".pt": _read_torch, ".pth": _read_torch}


def load_weights(
    module: nn.Module, path: str | Path, dtype: torch.dtype = torch.float32, strict: bool = True
) -> nn.Module:
    """Load a weight file into `module` (any `nn.Module`), casting floating tensors to `dtype`."""
    state = read_state_dict(path)
    expected = module.state_dict()
    problems = _mismatches(expected, state) if strict else []
    if problems:
        raise CheckpointError(f"{path}: checkpoint does not match the model: {'; '.join(problems)}")
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.to(dtype)
    module.load_state_dict(cast, strict=strict)
    return module


def _mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """Readable differences between two state dicts' keys and shapes."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)} expected"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    if missing:
        problems.append(f"missing keys {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append(f"shape mismatch {', '.join(shapes[:8])}{' ...' if len(shapes) > 8 else ''}")
    return problems


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from its card and weights (a checkpoint folder or a weight file beside `card.json`)."""
    source = Path(path)
    weights = source / WEIGHTS if source.is_dir() else source
    card_path = weights.parent / CARD
    if not card_path.is_file():
        raise CheckpointError(
            f"{card_path}: no model card beside {weights.name}, so the architecture is unknown; "
            "build the module yourself and call load_weights(module, path)"
        )
    card = read_card(card_path)
    if card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
        raise CheckpointError(
            f"{weights}: weights do not match the checksum in {card_path} (interrupted save?)"
        )
    spec = card.model_spec(str(card_path))
    # the checkpoint holds every weight, so initial-weight files need not exist where it is loaded
    arch = {k: v for k, v in spec.arch.items() if k not in WEIGHT_ARGUMENTS}
    model = build_model(spec.architecture, spec.img_size, **arch)
    load_weights(model, weights, dtype)
    if card.dtype != "float32":
        log.info("%s: weights saved in %s, loaded as %s", weights, card.dtype, dtype)
    return model.to(device).eval(), card
