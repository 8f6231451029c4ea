"""Attribution engine: one call turns a model and a batch into per-sample maps, for any registered method.

Importing this package registers every method (CAM family, fast path, attention methods, baselines).
"""

from __future__ import annotations

# importing the method modules registers their methods
from gradsum.attribution import (  # noqa: F401
    attention,
    baselines,
    cam,
    chefer,
    fastcam,
    lrp,
    lrp_transformer,
    split,
)
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
