"""Declarative model specs: architecture, size, task and training settings, loaded from YAML.

Built-in specs ship as package data in `gradsum/models/specs/*.yaml`; `load_spec` takes one of their
names or a path to a user's own file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from gradsum.dataspec import build, load_yaml, shipped
from gradsum.errors import SpecError
from gradsum.models.architectures import ARCHITECTURES, build_model, check_arguments
from gradsum.registry import Registry
from gradsum.taxonomy import TASKS

SPECS_DIR = Path(__file__).with_name("specs")


@dataclass(frozen=True)
class AugmentConfig:
    """Label-preserving photometric augmentations (no flips: they break the keep-right convention)."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    noise: float = 0.02


@dataclass(frozen=True)
class TrainConfig:
    """AdamW with linear warm-up (`warmup` is a fraction of all steps) and cosine decay."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    patience: int = 4
    seed: int = 0
    grad_clip: float = 1.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelSpec:
    """What to build and how to train it; `arch` holds the architecture builder's keyword arguments."""

    name: str
    architecture: str
    task: str
    img_size: tuple[int, int] = (96, 192)
    arch: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-ready dict that `ModelSpec.from_dict` reads back."""
        data = dataclasses.asdict(self)
        data["img_size"] = list(self.img_size)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "<spec>") -> ModelSpec:
        """Check and convert a parsed spec; errors name `source` and the field at fault."""
        spec = build(cls, data, source)
        ARCHITECTURES.get(spec.architecture, f"field 'architecture' of {source}")
        check_arguments(spec.architecture, spec.arch, f"{source}: field 'arch'")
        if spec.task not in TASKS:
            raise SpecError(f"{source}: field 'task' is {spec.task!r}; valid: {', '.join(TASKS)}")
        if len(spec.img_size) != 2 or min(spec.img_size) < 8:
            raise SpecError(f"{source}: field 'img_size' must be [height, width], got {list(spec.img_size)}")
        return spec

    def build(self) -> nn.Module:
        """A freshly initialised model of this spec."""
        return build_model(self.architecture, self.img_size, **self.arch)

    def with_train(self, **changes: Any) -> ModelSpec:
        """A copy with some training settings changed (e.g. `epochs` from the command line)."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))


def builtin_specs() -> Registry[Path]:
    """The shipped spec files by name."""
    return shipped(SPECS_DIR, "model spec")


def read_spec(path: str | Path) -> ModelSpec:
    """Load a spec from a YAML file."""
    source = Path(path)
    return ModelSpec.from_dict(load_yaml(source), str(source))


def load_spec(name_or_path: str | Path | ModelSpec, argument: str = "--model") -> ModelSpec:
    """A built-in spec by name (`pilotnet`, `vit`, ...) or a spec file by path; an unknown name raises
    naming `argument` (the flag or config field it came from)."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    text = str(name_or_path)
    if Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        return read_spec(text)
    return read_spec(builtin_specs().get(text, argument))
