"""The attribution API: `attribute(model, images, method, target=..., postprocess=..., normalise=...)`.

A method computes a raw map on its native grid (feature map, token grid or pixels), signed where the
method is; `attribute` does everything around it once for all methods: applicability, input and target
checks, the scoped model adapter, non-finite checks, the named post-processing steps (the method's
default, e.g. ReLU for CAMs, unless the caller names others), one batched bilinear upsampling to the
input size and the per-image normalisation. Every step is recorded in `AttributionResult.steps`.
`precision` (`gradsum.attribution.precision`) runs the method under a half-precision autocast.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradsum import taxonomy
from gradsum.attribution.adapters import (
    OutputKey,
    attribution_mode,
    model_device,
    prepare_images,
    select_output,
)
from gradsum.attribution.layers import resolve_layer
from gradsum.attribution.normalise import DEFAULT_NORMALISER, NORMALISERS
from gradsum.attribution.normalise import normalise as normalise_maps
from gradsum.attribution.postprocess import apply_steps, check_steps
from gradsum.attribution.precision import DEFAULT_PRECISION, resolve_precision
from gradsum.attribution.targets import Target, resolve_target
from gradsum.errors import AttributionError
from gradsum.models import is_quantised, model_family
from gradsum.names import part_label
from gradsum.registry import Registry

#: every model family, as the set a method that applies to any model declares in `applies_to`
FAMILIES = frozenset(taxonomy.FAMILIES)

#: what `Method.grid` returns: one raw map (B,h,w), or named parts with the combined map under "main"
GridOutput = Tensor | Mapping[str, Tensor]

MAIN = "main"


#: how the resampling step is named in `AttributionResult.steps` (the one step `on_grid` leaves out)
UPSAMPLE = "upsample bilinear"


@dataclass(frozen=True)
class AttributionResult:
    """Maps at input resolution, the raw map they came from, and every choice and step that made them.

    `raw` is the method's own map on its grid; `grid` is `raw` after the `postprocess` steps; `maps` is
    `grid` upsampled to the input and normalised. `performed` names steps the method (or the library
    behind it) applied before returning `raw`, so that `steps` is the whole truth.
    """

    maps: Tensor
    raw: Tensor
    grid: Tensor
    method: str
    target: str
    normalisation: str
    layer: str | None = None
    postprocess: tuple[str, ...] = ()
    performed: tuple[str, ...] = ()
    parts: Mapping[str, AttributionResult] = field(default_factory=dict)
    #: the precision the method computed in (`gradsum.attribution.precision.PRECISIONS`)
    precision: str = DEFAULT_PRECISION

    @property
    def steps(self) -> tuple[str, ...]:
        """Every post-processing step from the method's signed map to `maps`, in order."""
        (rows, cols), (height, width) = self.raw.shape[-2:], self.maps.shape[-2:]
        resized = (f"{UPSAMPLE} {rows}x{cols}->{height}x{width}",) if (rows, cols) != (height, width) else ()
        normalised = (f"normalise {self.normalisation}",) if self.normalisation != "raw" else ()
        return (*self.performed, *self.postprocess, *resized, *normalised)

    def on_grid(self) -> Tensor:
        """The map on the method's grid after every recorded step but the upsampling."""
        return normalise_maps(self.grid, self.normalisation)

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the choices and steps (method, target, steps, layer, grid, parts)."""
        record: dict[str, Any] = {
            "method": self.method,
            "target": self.target,
            "normalisation": self.normalisation,
            "precision": self.precision,
            "steps": list(self.steps),
            "layer": self.layer,
            "map_shape": list(self.maps.shape),
            "grid_shape": list(self.grid.shape),
        }
        if self.method in METHODS:
            record["grid"] = METHODS.get(self.method).grid_note
        if self.parts:
            record["parts"] = {name: part.describe() for name, part in self.parts.items()}
        return record


class Method(abc.ABC):
    """One attribution method; subclasses set the class variables and implement `grid`."""

    name: ClassVar[str]
    description: ClassVar[str]
    applies_to: ClassVar[frozenset[str]]
    uses_layer: ClassVar[bool]
    needs_attention: ClassVar[bool] = False
    #: layer used when the caller names none, per model family (else the family's default layer)
    default_layer: ClassVar[Mapping[str, str]] = {}
    #: the fast path freezes parameters; library methods that backpropagate to the input do not
    freeze_parameters: ClassVar[bool] = False
    #: accepted options and their defaults; anything else is an error naming the option
    defaults: ClassVar[Mapping[str, Any]] = {}
    #: what `AttributionResult.raw` holds for this method (recorded by `describe`)
    grid_note: ClassVar[str] = "raw map on the method's native grid"
    #: post-processing steps `attribute` applies when the caller names none (see `postprocess.STEPS`)
    default_postprocess: ClassVar[tuple[str, ...]] = ()
    #: steps the method applies itself before returning its map, recorded first in the result's steps
    performs: ClassVar[tuple[str, ...]] = ()
    #: why the method refuses a half precision (bf16, fp16); None: it runs under autocast
    half_precision_refusal: ClassVar[str | None] = None
    #: why the method refuses a model with int8 layers (`gradsum.models.int8`); None: it runs on one
    int8_refusal: ClassVar[str | None] = None

    def __init__(self, output: OutputKey = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise AttributionError(f"options: {self.name} has no option {', '.join(unknown)}; valid: {valid}")
        self.output_key = output
        self.options: dict[str, Any] = {**self.defaults, **options}
        #: what this call's `grid` applied itself (a method may add to `performs` for some inputs)
        self.performed: tuple[str, ...] = self.performs

    def forward(self, model: nn.Module, images: Tensor) -> Tensor:
        """The model's output tensor for `images` (the part named by `output=` when it returns several)."""
        return select_output(model(images), self.output_key)

    @abc.abstractmethod
    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> GridOutput:
        """Raw float32 map(s) (B,h,w) on the model's device; a mapping holds named parts and "main"."""


METHODS: Registry[type[Method]] = Registry("attribution method")

#: why the LRP methods (Zennit's rules, Chefer's LRP, lxt's AttnLRP and CP-LRP) refuse an int8 model
LRP_ON_INT8 = (
    "LRP passes relevance through each linear layer by a rule on its float weights, attached to nn.Linear "
    "modules (Zennit, Chefer's LRP, lxt); an int8 layer is PyTorch's quantised kernel with a straight-through "
    "gradient, so no rule would apply there and the map would mix LRP with plain gradients unannounced; "
    "attribute the float parent (the card's compression.parent) instead"
)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a Method under `name` (and set its `name`)."""

    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.add(name, cls)
        return cls

    return add


@dataclass(frozen=True)
class MethodInfo:
    """What `gradsum methods` prints about one method."""

    name: str
    description: str
    applies_to: tuple[str, ...]
    uses_layer: bool


def list_methods() -> list[MethodInfo]:
    """Every registered method, sorted by name."""
    return [
        MethodInfo(name, cls.description, tuple(sorted(cls.applies_to)), cls.uses_layer)
        for name, cls in METHODS.items()
    ]


def upsample(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """(B,h,w) → (B,H,W) with one batched bilinear interpolation (identity when sizes agree)."""
    if tuple(grid.shape[-2:]) == size:
        return grid
    return F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _check_finite(grid: Tensor, method: str, part: str) -> None:
    bad = (~torch.isfinite(grid.flatten(1))).any(dim=1).nonzero().flatten().tolist()
    if bad:
        where = f" (part {part})" if part != MAIN else ""
        raise AttributionError(
            f"method {method}{where}: non-finite map for sample index {bad[0]} (all: {bad})"
        )


def _check_grid(grid: Any, batch: int, method: str, part: str) -> Tensor:
    if not isinstance(grid, Tensor) or grid.ndim != 3 or grid.shape[0] != batch:
        shape = tuple(grid.shape) if isinstance(grid, Tensor) else type(grid).__name__
        raise AttributionError(f"method {method}: part {part} is {shape}, expected a ({batch},h,w) map")
    grid = grid.detach().float()
    _check_finite(grid, method, part)
    return grid


def attribute(
    model: nn.Module,
    images: Tensor,
    method: str = "gradcam",
    *,
    target: str | Target | Sequence[float] | Tensor | None = None,
    task: str = "steering",
    layer: str | None = None,
    normalise: str = DEFAULT_NORMALISER,
    postprocess: Sequence[str] | None = None,
    output: OutputKey = None,
    precision: str = DEFAULT_PRECISION,
    **options: Any,
) -> AttributionResult:
    """Attribution maps (B,H,W) for `images` (B,3,H,W in [0,1]) by `method`, one target per sample.

    `target` is a target name of `task` (None: `direction` for steering, `predicted` for obstacle), a
    `Target`, or per-sample signs; `output` names the explained part of a tuple or dict output.
    `postprocess` names the steps applied to the raw map on its grid (None: the method's default, e.g.
    `("relu",)` for CAMs; `()`: the signed map as the method gives it) before upsampling and `normalise`.
    `precision` names the autocast the method runs in (`fp32`: none; `bf16`, `fp16`: see
    `gradsum.attribution.precision`); a method with a `half_precision_refusal` refuses a half precision.
    """
    cls = METHODS.get(method, "method")
    kind = model_family(model)
    if kind not in cls.applies_to:
        raise AttributionError(f"method {method} applies to {'/'.join(sorted(cls.applies_to))}, not {kind}")
    NORMALISERS.get(normalise, "normalise")
    compute = resolve_precision(precision, model_device(model))
    if compute.half and cls.half_precision_refusal is not None:
        raise AttributionError(
            f"precision: method {method} refuses {precision}: {cls.half_precision_refusal}"
        )
    if cls.int8_refusal is not None and is_quantised(model):
        raise AttributionError(f"model: method {method} refuses a model with int8 layers: {cls.int8_refusal}")
    steps = check_steps(cls.default_postprocess if postprocess is None else postprocess)
    chosen = resolve_target(target, task)
    batch = prepare_images(model, images)
    chosen.check_batch(batch.shape[0])
    instance = cls(output=output, **options)
    size = (int(batch.shape[2]), int(batch.shape[3]))
    with attribution_mode(
        model, needs_attention=cls.needs_attention, freeze_parameters=cls.freeze_parameters
    ):
        layer = layer if layer is not None else cls.default_layer.get(kind)
        layer_name = resolve_layer(model, layer).name if cls.uses_layer else None
        # the weights stay float32 (attribution_mode); autocast computes the method in the half type
        with compute.autocast(batch.device.type):
            raw = instance.grid(model, batch, chosen, layer_name)
    named = dict(raw) if isinstance(raw, Mapping) else {MAIN: raw}
    if MAIN not in named:
        raise AttributionError(f"method {method}: its parts {sorted(named)} have no {MAIN!r} map")
    grids = {part: _check_grid(grid, batch.shape[0], method, part) for part, grid in named.items()}
    results = {
        part: AttributionResult(
            *_post_process(raw_grid, steps, size, normalise),
            method=method if part == MAIN else part_label(method, part),
            target=chosen.name,
            normalisation=normalise,
            layer=layer_name,
            postprocess=steps,
            performed=instance.performed,
            precision=compute.name,
        )
        for part, raw_grid in grids.items()
    }
    main = results.pop(MAIN)
    return replace(main, parts=results)


def _post_process(
    raw: Tensor, steps: tuple[str, ...], size: tuple[int, int], normalise: str
) -> tuple[Tensor, Tensor, Tensor]:
    """(maps, raw, grid): `steps` applied to `raw` on its grid, then upsampled to `size` and normalised."""
    grid = apply_steps(raw, steps)
    return normalise_maps(upsample(grid, size), normalise), raw, grid
