"""The synthetic driving-scene truth set: rendered road scenes with known causes (see datasets/SYNTHETIC.md).

`generate(out, count, seed)` writes a set in the Cityscapes layout; `open_truthset(out, split)` reads it
back as a `SyntheticTruthSet`, whose `counterfactual(...)` re-renders a scene with one factor changed and
`erase(index, cls)` erases one class in-domain.
"""

from __future__ import annotations

from gradsum.truthsets.synthetic.reader import SYNTHETIC_CLASSES, SyntheticTruthSet
from gradsum.truthsets.synthetic.render import (
    Rendered,
    counterfactual_params,
    ego_lane_mask,
    erase_params,
    instance_ids,
    render,
    render_counterfactual,
)
from gradsum.truthsets.synthetic.scene import CAUSES, ERASURE, SceneParams, sample_scene, steering, targets
from gradsum.truthsets.synthetic.writer import generate, parse_size

__all__ = [
    "CAUSES",
    "ERASURE",
    "SYNTHETIC_CLASSES",
    "Rendered",
    "SceneParams",
    "SyntheticTruthSet",
    "counterfactual_params",
    "ego_lane_mask",
    "erase_params",
    "generate",
    "instance_ids",
    "parse_size",
    "render",
    "render_counterfactual",
    "sample_scene",
    "steering",
    "targets",
]
