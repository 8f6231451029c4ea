"""Safe checkpoints: weights in safetensors plus a JSON model card; loading never runs code from a file.

`.safetensors` is read directly; `.pt`/`.pth` only through `torch.load(..., weights_only=True)`; any
other file (pickles, unknown suffixes) is refused. Weights saved in float16/bfloat16 are cast to the
requested dtype (float32 by default) on load, so attribution always runs in float32.

A model folder holds `card.json` and `model.safetensors`. A folder with a tensors-only `model.pt` instead
(weights trained elsewhere, card written by hand) loads too: torch's weights-only reader runs no code and
the tensors are checked against the card's spec like any others, so converting first would add a step
without adding safety. Loading checks, in this order, the card, the weight file's format, its parameter
shapes against the card's model, and only then the card's checksum, so each failure is named for what it is.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from gradsum.contract import CARD, FOLDER_WEIGHTS, WEIGHTS
from gradsum.dataspec import build
from gradsum.errors import CheckpointError, SpecError
from gradsum.fileio import atomic_write_bytes, atomic_write_json, read_json_object, sha256_file
from gradsum.models.architectures import WEIGHT_ARGUMENTS, build_model
from gradsum.models.inputs import INPUT_TRANSFORM
from gradsum.models.int8 import INT8_LAYERS, int8_skeleton
from gradsum.models.specs import ModelSpec
from gradsum.utils import library_versions

log = logging.getLogger(__name__)

#: keys under which `.pt` files commonly nest their state dict
NESTED_KEYS = ("state_dict", "model", "model_state_dict")
#: leading bytes of files that are not safetensors, with what they look like
FOREIGN_MAGIC = {
    b"PK\x03\x04": "a torch zip (torch.save)",
    b"\x80\x02": "a pickle",
    b"\x80\x03": "a pickle",
    b"\x80\x04": "a pickle",
    b"\x80\x05": "a pickle",
}


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
    #: how truth-set frames become this model's input (resize policy, scale, crop): the one transform
    #: training, the pipeline, `profile`, `attribute` and the trust checks share
    input_transform: dict[str, str] = field(default_factory=lambda: dict(INPUT_TRANSFORM))
    #: SHA-256 of the weight file, so a card never vouches for weights from another (interrupted) save
    weights_sha256: str = ""
    #: how relevance-guided fine-tuning made these weights from another model (`gradsum.finetune`): its
    #: settings (the fields of `FinetuneSettings`), the base folder and its weights' SHA-256, the
    #: foreground ids, the truth set and scene ids, and the loss before and after; empty for a model
    #: trained from scratch
    finetune: dict[str, Any] = field(default_factory=dict)
    #: how `gradsum.models.resize` rebuilt these weights for another input size: the source folder, its
    #: weights' SHA-256, the input sizes and token grids before and after, and the resampling; empty for
    #: a model used at the size it was made for
    resized: dict[str, Any] = field(default_factory=dict)
    #: how `gradsum.models.compression` made these weights from a parent model: the method, level, parent
    #: folder and its weights' SHA-256, measured sparsity, bytes, the parent's metrics (and, for int8, the
    #: layers `load_model` rebuilds as int8); empty for an uncompressed model
    compression: dict[str, Any] = field(default_factory=dict)
    libraries: dict[str, str] = field(default_factory=library_versions)
    format_version: int = 1

    @property
    def name(self) -> str:
        """The spec's name."""
        return str(self.spec.get("name", ""))

    def model_spec(self, source: str = CARD) -> ModelSpec:
        """The card's spec as a `ModelSpec`; a bad spec raises `CheckpointError` naming the card's field."""
        try:
            return ModelSpec.from_dict(self.spec, f"{source} (field 'spec')")
        except SpecError as error:
            raise CheckpointError(str(error)) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = CARD) -> ModelCard:
        """Read a card dict, refusing unknown, missing and wrong-typed fields by name."""
        try:
            return build(cls, dict(data), source)
        except SpecError as error:
            raise CheckpointError(str(error)) from None


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
    if source.stat().st_size == 0:
        raise CheckpointError(f"{source}: empty file (0 bytes)")
    return reader(source)


def _read_safetensors(source: Path) -> dict[str, torch.Tensor]:
    with open(source, "rb") as handle:
        head = handle.read(4)
    looks_like = next((kind for magic, kind in FOREIGN_MAGIC.items() if head.startswith(magic)), None)
    if looks_like is not None:
        raise CheckpointError(
            f"{source}: is not a safetensors file (looks like {looks_like}); a tensors-only torch file "
            f"loads under the name {FOLDER_WEIGHTS[1]} (read with torch's weights-only loader), or save it with "
            "safetensors"
        )
    try:
        return safetensors.torch.load_file(str(source), device="cpu")
    except Exception as error:  # the safetensors reader raises several unrelated types on bad bytes
        raise CheckpointError(f"{source}: corrupt safetensors file ({error})") from None


def _read_torch(source: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing; the refusal below says all there is
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{source}: refused: {_pickle_refusal(str(error))}") from None
    except Exception as error:  # truncated zip, wrong magic number, ...
        raise CheckpointError(f"{source}: corrupt checkpoint ({type(error).__name__}: {error})") from None
    for key in NESTED_KEYS:
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{source}: not a state dict of tensors")
    return data


def _pickle_refusal(torch_message: str) -> str:
    """One line for torch's weights-only refusal, naming the Python object the pickle asked for if any."""
    # torch's text is several paragraphs (with colour codes on some versions) recommending weights_only=False
    found = re.search(r"GLOBAL ([\w.]+)", re.sub(r"\x1b\[[0-9;]*m", "", torch_message))
    names = f" (it calls for {found.group(1)})" if found else ""
    return (
        f"the file holds pickled Python code or objects{names} beyond tensors, which GradSUM will not "
        "execute; save a state dict of tensors (torch.save(model.state_dict(), ...)) or use safetensors"
    )


_READERS = {".safetensors": _read_safetensors, ".pt": _read_torch, ".pth": _read_torch}


def load_weights(
    module: nn.Module, path: str | Path, dtype: torch.dtype = torch.float32, strict: bool = True
) -> nn.Module:
    """Load a weight file into `module` (any `nn.Module`), casting floating tensors to `dtype`."""
    return _load_state(module, read_state_dict(path), path, dtype, strict)


def _load_state(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path, dtype: torch.dtype, strict: bool
) -> nn.Module:
    problems = state_dict_mismatches(module.state_dict(), state) if strict else []
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match the model: {'; '.join(problems)}")
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    module.to(dtype)
    module.load_state_dict(cast, strict=strict)
    return module


def state_dict_mismatches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> list[str]:
    """Readable differences between two state dicts' keys and shapes."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"parameter {k} has shape {tuple(found[k].shape)}, the model expects {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    if missing:
        problems.append(f"missing keys {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    problems.extend(shapes[:8])
    if len(shapes) > 8:
        problems.append(f"{len(shapes) - 8} more shape mismatches")
    return problems


def weights_file(folder: str | Path) -> Path:
    """The weight file a model folder loads: `model.safetensors`, else a tensors-only `model.pt`/`.pth`."""
    source = Path(folder)
    for name in FOLDER_WEIGHTS:
        if (source / name).is_file():
            return source / name
    raise CheckpointError(f"{source}: {WEIGHTS} is missing (found: {_listing(source)})")


def _listing(folder: Path, limit: int = 8) -> str:
    """The names in `folder`, for messages about what a model folder holds instead."""
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "nothing"


def checkpoint_folder(path: str | Path) -> Path:
    """The model folder `path` names: a folder as given, or the folder of its card or weight file.

    A folder need not exist yet (a run may train into it). A file must be the card or the weights of a
    model folder; anything else raises `CheckpointError` saying what is expected.
    """
    source = Path(path)
    names_a_file = source.name == CARD or source.suffix.lower() in _READERS
    if source.is_dir() or (not source.exists() and not names_a_file):
        return source
    if not source.exists():
        raise CheckpointError(f"{source}: no such file")
    expected = f"a model folder ({CARD} + {WEIGHTS}) is expected"
    if not names_a_file:
        raise CheckpointError(f"{expected}; {source} is neither a model card nor a weight file")
    folder = source.parent
    if not (folder / CARD).is_file():
        raise CheckpointError(f"{expected}; {source} has no {CARD} beside it")
    if source.name != CARD and (loaded := weights_file(folder)) != source:
        raise CheckpointError(
            f"{source}: its folder {folder} loads {loaded.name}, not this file; name the folder"
        )
    return folder


def module_for(spec: ModelSpec) -> nn.Module:
    """A module of `spec` to load a checkpoint into: built without its initial-weight arguments."""
    # the checkpoint holds every weight, so initial-weight files need not exist where it is loaded
    arch = {k: v for k, v in spec.arch.items() if k not in WEIGHT_ARGUMENTS}
    return build_model(spec.architecture, spec.img_size, **arch)


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, ModelCard]:
    """Rebuild a model from its card and weights (a checkpoint folder or a weight file beside `card.json`)."""
    source = Path(path)
    if not source.exists():
        raise CheckpointError(f"{source}: no such model folder or weight file")
    if source.is_dir():
        card_path = source / CARD
        if not card_path.is_file():
            raise CheckpointError(
                f"{source}: not a model folder: {CARD} is missing (found: {_listing(source)})"
            )
        weights = weights_file(source)
    else:
        weights, card_path = source, source.parent / CARD
        if not card_path.is_file():
            raise CheckpointError(
                f"{card_path}: no model card beside {weights.name}, so the architecture is unknown; "
                "build the module yourself and call load_weights(module, path)"
            )
    card = read_card(card_path)
    state = read_state_dict(weights)
    spec = card.model_spec(str(card_path))
    if weights.suffix != ".safetensors":
        log.info("%s: no %s; read %s with torch's weights-only loader", weights.parent, WEIGHTS, weights.name)
    # an int8 card's layers are rebuilt as int8 before its int8 tensors are loaded into them
    model = int8_skeleton(module_for(spec), card.compression.get(INT8_LAYERS, ()), str(card_path))
    if problems := state_dict_mismatches(model.state_dict(), state):
        raise CheckpointError(
            f"{weights}: does not fit the {spec.architecture} model of {card_path}: {'; '.join(problems)}"
        )
    # checked last: a foreign or misshapen file is named for what it is, not as a checksum mismatch
    if card.weights_sha256 and sha256_file(weights) != card.weights_sha256:
        raise CheckpointError(
            f"{weights}: weights differ from those {card_path} was written for (its checksum "
            "weights_sha256 does not match): the file was replaced after the card was saved, or the save was interrupted"
        )
    _load_state(model, state, weights, dtype, strict=True)
    if card.dtype != "float32":
        log.info("%s: weights saved in %s, loaded as %s", weights, card.dtype, dtype)
    return model.to(device).eval(), card
