"""The synthetic driving-scene truth set: rendered road scenes with known causes (see datasets/SYNTHETIC.md).

`generate(out, count, seed)` writes a set in the Cityscapes layout; `open_truthset(out, split)` reads it
back as a `SyntheticTruthSet` (the reader, `gradsum.truthsets.readers.synthetic`), whose `counterfactual(...)` re-renders a scene with one factor changed,
`erase(index, cls)` erases one class in-domain and `flip_tint(index)` repaints the sky in the other tint.
`generate(..., decorrelated=True)` adds the TINT_SPLITS: the test scenes with the tint against / with
the steering sign everywhere. `generate(..., difficulty={"shadows": 2})` renders harder scenes with
the difficulty ladder's knobs (`ladder.KNOBS`, levels 0..3); targets and causes stay exact.
"""

from __future__ import annotations

from gradsum.truthsets.synthetic.ladder import KNOBS, Difficulty, parse_difficulty
from gradsum.truthsets.synthetic.render import (
    Rendered,
    counterfactual_params,
    ego_lane_mask,
    erase_params,
    instance_ids,
    render,
    render_counterfactual,
)
from gradsum.truthsets.synthetic.scene import (
    CAUSES,
    ERASURE,
    SceneParams,
    opposite_tint,
    sample_scene,
    steering,
    targets,
    with_tint,
)
from gradsum.truthsets.synthetic.writer import TINT_SPLITS, generate, parse_size

__all__ = [
    "CAUSES",
    "ERASURE",
    "KNOBS",
    "TINT_SPLITS",
    "Difficulty",
    "Rendered",
    "SceneParams",
    "counterfactual_params",
    "ego_lane_mask",
    "erase_params",
    "generate",
    "instance_ids",
    "opposite_tint",
    "parse_difficulty",
    "parse_size",
    "render",
    "render_counterfactual",
    "sample_scene",
    "steering",
    "targets",
    "with_tint",
]
