"""Attribution engine: one call turns a model and a batch into per-sample maps, for any registered method.

Importing this package registers every method: `gradsum.attribution.methods` imports each module in its
folder (CAM family, fast path, attention methods, LRP, baselines), and each registers its own.
"""

from __future__ import annotations

# importing the methods package registers every method in its folder
from gradsum.attribution import methods  # noqa: F401
from gradsum.attribution.adapters import attribution_mode
from gradsum.attribution.base import (
    METHODS,
    AttributionResult,
    Method,
    MethodInfo,
    attribute,
    list_methods,
    register_method,
)
from gradsum.attribution.normalise import NORMALISERS
from gradsum.attribution.postprocess import STEPS
from gradsum.attribution.targets import TARGETS, Target, per_sample, resolve_target

__all__ = [
    "METHODS",
    "NORMALISERS",
    "STEPS",
    "TARGETS",
    "AttributionResult",
    "Method",
    "MethodInfo",
    "Target",
    "attribute",
    "attribution_mode",
    "list_methods",
    "per_sample",
    "register_method",
    "resolve_target",
]
