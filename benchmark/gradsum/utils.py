"""Small helpers shared by every stage: devices, seeds, library versions."""

from __future__ import annotations

import importlib.metadata
import random

import numpy as np
import torch

from gradsum.errors import SpecError

#: Libraries whose versions are recorded in model cards and run manifests.
RECORDED_LIBRARIES = (
    "gradsum",
    "torch",
    "torchvision",
    "timm",
    "grad-cam",
    "captum",
    "cityscapesscripts",
    "numpy",
    "scipy",
    "pandas",
    "safetensors",
)


def default_device() -> str:
    """`cuda` when a GPU is present, else `cpu`."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(requested: str | None) -> str:
    """`requested` (a `--device` flag or config field) once checked usable here, else `default_device()`."""
    if requested is None:
        return default_device()
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise SpecError(f"device {requested!r}: not a torch device (cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {requested!r}: no CUDA GPU is available here; use cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SpecError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    return requested


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results."""
    versions = {}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
