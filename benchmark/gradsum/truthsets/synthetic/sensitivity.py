"""The steering label's sensitivity mask: the pixels whose rendering moves when the label's latents move.

The steering label is linear in −offset + 15·heading + 112.5·curvature (`scene.steering`,
`scene.lane_centre`); curvature carries about 85 % of its variance. The renderer draws the lane at every
depth: the road and its markings, the sidewalks that follow it, and the poles, cars and people placed
relative to its centre. The pixels that carry the label are therefore wherever that geometry is drawn,
far road and sidewalks included, not only the near ego lane a driver looks at (the plausibility mask,
`SyntheticTruthSet.plausibility_mask`). This mask marks them: the scene is re-rendered with each latent
nudged both ways, and a pixel belongs to the mask when its colour or its label changes under any nudge.
Texture noise is drawn from the scene's seed whatever the geometry (`render`), so only pixels whose
covering class or position-dependent colour moves can change: sky, buildings and trees never do, except
where a moving pole, sign, car or person covers or uncovers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import counterfactual_params, render
from gradsum.truthsets.synthetic.scene import SceneParams

#: The latents the steering label is a function of, with the width of their uniform sampling range
#: (`scene.sample_scene` draws each from ±its `*_RANGE`).
STEERING_LATENTS: dict[str, float] = {
    "curvature": 2 * sc.CURVATURE_RANGE,
    "heading": 2 * sc.HEADING_RANGE,
    "offset": 2 * sc.OFFSET_RANGE,
}

#: Each latent is nudged by ± this fraction of its sampling range. Chosen from the renderer's geometry on
#: 96×192 scenes (focal length f = 96 px), before any model was evaluated on the mask: a heading change
#: Δ moves every lane boundary sideways by f·Δ pixels at every depth, so 0.05 · 0.1 rad moves it by
#: ±0.48 px, and the pair of nudges marks the whole one-pixel band of each boundary rather than a
#: subsample that depends on where the boundary falls inside its pixels (at 0.02 only ~1 boundary pixel in
#: 5 flips per nudge). At the same fraction the offset nudge (0.06 m) moves boundaries by ≥ ±0.48 px up
#: to 12 m ahead and the curvature nudge (0.002 /m) by ≥ ±0.48 px from 5 m on (1.4 px at the 15 m
#: look-ahead): the nudge stays at about a pixel where the label reads the lane, and the mask stays the
#: boundary bands (about 5 % of the image), not a smear.
NUDGE = 0.05


def nudged(params: SceneParams, nudge: float = NUDGE) -> Iterator[SceneParams]:
    """The scene with each steering latent in turn moved by ±`nudge` of its sampling range."""
    for name, span in STEERING_LATENTS.items():
        value = float(getattr(params, name))
        for sign in (-1.0, 1.0):
            change: dict[str, Any] = {name: value + sign * nudge * span}
            yield counterfactual_params(params, **change)


def label_sensitivity_mask(params: SceneParams, nudge: float = NUDGE) -> np.ndarray:
    """(H, W) bool: the pixels whose colour (any channel) or label changes under any nudge of curvature,
    heading or offset (`nudged`): where the image carries the steering label."""
    original = render(params)
    mask = np.zeros(original.labels.shape, dtype=bool)
    for changed in nudged(params, nudge):
        other = render(changed)
        mask |= np.any(other.image != original.image, axis=-1) | (other.labels != original.labels)
    return mask
