"""Named post-processing steps between a method's raw map and the maps a result carries.

A method returns its own map (signed where the method is, like captum's attributions); `attribute`
applies the steps a caller names, or the method's declared default (`Method.default_postprocess`:
ReLU for the CAM family, nothing for signed methods), on the method's grid, then upsamples and
normalises. `AttributionResult.steps` lists every step in order, so no map is post-processed twice or
silently: the pipeline replays the same steps on the grid instead of normalising again by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from gradsum.attribution.normalise import minmax, sum_to_one
from gradsum.registry import Registry

Step = Callable[[Tensor], Tensor]

STEPS: Registry[Step] = Registry("postprocess step")


@STEPS.register("relu")
def relu(maps: Tensor) -> Tensor:
    """Positive evidence only, max(m, 0): the ReLU a CAM applies to its weighted activations."""
    return maps.clamp(min=0)


@STEPS.register("abs")
def magnitude(maps: Tensor) -> Tensor:
    """|m|: evidence for and against the target counted alike."""
    return maps.abs()


# the per-image normalisers are steps too (applied on the grid, before upsampling); "raw" changes nothing
STEPS.add("minmax", minmax)
STEPS.add("sum", sum_to_one)


def check_steps(names: Sequence[str], where: str = "postprocess") -> tuple[str, ...]:
    """`names` as a tuple, each checked against the registry (an unknown one names the valid steps)."""
    if isinstance(names, str):
        names = (names,)
    for index, name in enumerate(names):
        STEPS.get(name, f"{where}[{index}]")
    return tuple(names)


def apply_steps(maps: Tensor, names: Sequence[str]) -> Tensor:
    """The registered steps `names` applied to a batch of maps (B,...), in order."""
    for name in names:
        maps = STEPS.get(name, "postprocess")(maps)
    return maps
