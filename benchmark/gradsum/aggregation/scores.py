"""GradSUM scores per image and class, batched on the device with one bincount per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradsum.errors import GradSUMError
from gradsum.truthsets.labels import NUM_CITYSCAPES_IDS, ignored_cityscapes_ids

#: "label": maps upsampled to the labels; "grid": labels reduced to per-cell class fractions of the map grid.
RESOLUTIONS = ("label", "grid")


@dataclass(frozen=True)
class ClassScores:
    """Per image × class figures, each a (B, C) tensor; NaN where the class is absent or ignored."""

    pixels: torch.Tensor
    map_sum: torch.Tensor
    score: torch.Tensor
    mass_share: torch.Tensor
    area_share: torch.Tensor
    lift: torch.Tensor
    present: torch.Tensor
    resolution: str

    @property
    def num_images(self) -> int:
        """B, the number of images."""
        return int(self.pixels.shape[0])

    @property
    def num_classes(self) -> int:
        """C, the number of class slots."""
        return int(self.pixels.shape[1])

    def cpu(self) -> ClassScores:
        """The same figures on the CPU."""
        moved = {name: getattr(self, name).cpu() for name in _TENSOR_FIELDS}
        return ClassScores(**moved, resolution=self.resolution)


_TENSOR_FIELDS = ("pixels", "map_sum", "score", "mass_share", "area_share", "lift", "present")


@dataclass(frozen=True)
class ClassWeights:
    """Labels prepared for one map grid: the weight of every grid cell in every class's map sum.

    A class's map sum is `weights[b, c] · map[b]`, exactly what upsampling the map (label resolution,
    bilinear) or cell counting (grid resolution) gives; labels prepared once serve every model × method.
    """

    weights: torch.Tensor
    pixels: torch.Tensor
    resolution: str

    @property
    def grid(self) -> tuple[int, int]:
        """The (h, w) map grid these weights apply to."""
        return int(self.weights.shape[2]), int(self.weights.shape[3])


def class_scores(
    maps: torch.Tensor,
    labels: torch.Tensor | ClassWeights,
    *,
    resolution: str | None = None,
    num_classes: int = NUM_CITYSCAPES_IDS,
    ignore_ids: Sequence[int] | None = None,
) -> ClassScores:
    """GradSUM score, mass share, area share and lift of every class in every image of a batch.

    `labels` are Cityscapes ids (B, H', W') or `prepare_labels` output; `resolution` defaults to "label".
    """
    ignore = ignored_cityscapes_ids() if ignore_ids is None else list(ignore_ids)
    if isinstance(labels, ClassWeights):
        _check_prepared(maps, labels, resolution)
        pixels, map_sum = labels.pixels, _weighted_sums(maps, labels)
        return _finish(pixels, map_sum, ignore, labels.resolution)
    resolution = resolution or "label"
    _check_inputs(maps, labels, resolution, num_classes)
    labels = labels.to(maps.device)
    if resolution == "label" or tuple(maps.shape[-2:]) == tuple(labels.shape[-2:]):
        pixels, map_sum = _label_sums(maps, labels, num_classes)
    else:
        prepared = prepare_labels(labels, _grid_of(maps), resolution="grid", num_classes=num_classes)
        pixels, map_sum = prepared.pixels, _weighted_sums(maps, prepared)
    return _finish(pixels, map_sum, ignore, resolution)


def prepare_labels(
    labels: torch.Tensor,
    grid: tuple[int, int],
    *,
    resolution: str = "label",
    num_classes: int = NUM_CITYSCAPES_IDS,
) -> ClassWeights:
    """Per-class cell weights of a label batch for maps on `grid`, to reuse across models and methods."""
    _check_inputs(torch.empty(labels.shape[0], *grid), labels, resolution, num_classes)
    index = _flat_index(labels, num_classes)
    pixels = torch.bincount(index, minlength=labels.shape[0] * num_classes).view(labels.shape[0], num_classes)
    if resolution == "grid":
        weights = _cell_counts(labels, grid, num_classes)
    else:
        weights = _bilinear_weights(labels, grid, num_classes)
    return ClassWeights(weights=weights, pixels=pixels, resolution=resolution)


def class_fractions(
    labels: torch.Tensor, grid: tuple[int, int], num_classes: int = NUM_CITYSCAPES_IDS
) -> torch.Tensor:
    """Per-cell class fractions (B, C, h, w) of a label batch reduced to a `grid` of cells."""
    counts = _cell_counts(labels, grid, num_classes)
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)


def _grid_of(maps: torch.Tensor) -> tuple[int, int]:
    return int(maps.shape[-2]), int(maps.shape[-1])


def _check_prepared(maps: torch.Tensor, prepared: ClassWeights, resolution: str | None) -> None:
    if resolution is not None and resolution != prepared.resolution:
        raise GradSUMError(
            f"resolution: {resolution!r} differs from the prepared labels' {prepared.resolution!r}"
        )
    if maps.dim() != 3 or maps.shape[0] != prepared.weights.shape[0] or _grid_of(maps) != prepared.grid:
        raise GradSUMError(
            f"maps: shape {tuple(maps.shape)} does not fit labels prepared for "
            f"{prepared.weights.shape[0]} images on a {prepared.grid} grid"
        )


def _weighted_sums(maps: torch.Tensor, prepared: ClassWeights) -> torch.Tensor:
    weights = prepared.weights.to(maps.device)
    return torch.einsum("bchw,bhw->bc", weights, maps.double())


def _check_inputs(maps: torch.Tensor, labels: torch.Tensor, resolution: str, num_classes: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GradSUMError(f"resolution: {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    if maps.dim() != 3 or labels.dim() != 3:
        raise GradSUMError(
            f"maps and labels must be (B, H, W); got maps {tuple(maps.shape)}, labels {tuple(labels.shape)}"
        )
    if maps.shape[0] != labels.shape[0]:
        raise GradSUMError(f"maps has {maps.shape[0]} images but labels has {labels.shape[0]}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise GradSUMError(f"labels must be an integer tensor of class ids, got {labels.dtype}")
    low, high = torch.aminmax(labels)
    if int(low) < 0 or int(high) >= num_classes:
        raise GradSUMError(f"labels: ids must lie in 0..{num_classes - 1}, found {int(low)}..{int(high)}")


def _flat_index(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    # int32 keeps the index half the size of int64 and the broadcast add several times faster on CPU.
    offsets = torch.arange(labels.shape[0], device=labels.device, dtype=torch.int32) * num_classes
    return (labels.to(torch.int32) + offsets.view(-1, 1, 1)).reshape(-1)


def _label_sums(
    maps: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = labels.shape[0]
    if maps.shape[-2:] != labels.shape[-2:]:
        maps = F.interpolate(
            maps[:, None].float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
        )
    index = _flat_index(labels, num_classes)
    size = batch * num_classes
    pixels = torch.bincount(index, minlength=size).view(batch, num_classes)
    # float64 sums: a class can hold millions of pixels, float32 would drift in the 5th digit.
    map_sum = torch.bincount(index, weights=maps.reshape(-1).double(), minlength=size)
    return pixels, map_sum.view(batch, num_classes)


def _cell_of(size: int, cells: int, device: torch.device) -> torch.Tensor:
    # The cell holding each pixel's centre: floor((i + 0.5) * cells / size), in exact integers.
    return ((2 * torch.arange(size, device=device) + 1) * cells) // (2 * size)


def _cell_counts(labels: torch.Tensor, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    batch, height, width = labels.shape
    rows, cols = grid
    size = batch * num_classes * rows * cols
    dtype = torch.int32 if size < 2**31 else torch.int64
    cell = _cell_of(height, rows, labels.device)[:, None] * cols + _cell_of(width, cols, labels.device)
    image_class = _flat_index(labels, num_classes).view(batch, height, width).to(dtype)
    index = (image_class * (rows * cols) + cell.to(dtype)).reshape(-1)
    counts = torch.bincount(index, minlength=size)
    return counts.view(batch, num_classes, rows, cols).double()


def _bilinear_taps(size: int, cells: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    # The two source cells and weights of each output pixel in F.interpolate(bilinear, align_corners=False).
    source = (
        (torch.arange(size, device=device, dtype=torch.float64) + 0.5) * (cells / size) - 0.5
    ).clamp_min(0)
    low = source.floor().long().clamp_max(cells - 1)
    high = (low + 1).clamp_max(cells - 1)
    frac = source - low
    return low, high, 1 - frac, frac


def _bilinear_weights(labels: torch.Tensor, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    batch, height, width = labels.shape
    rows, cols = grid
    size = batch * num_classes * rows * cols
    dtype = torch.int32 if size < 2**31 else torch.int64
    image_class = _flat_index(labels, num_classes).view(batch, height, width).to(dtype) * (rows * cols)
    row_low, row_high, row_w0, row_w1 = _bilinear_taps(height, rows, labels.device)
    col_low, col_high, col_w0, col_w1 = _bilinear_taps(width, cols, labels.device)
    weights = torch.zeros(size, dtype=torch.float64, device=labels.device)
    # Each label pixel feeds the four grid cells its bilinear sample reads from.
    for row, row_weight in ((row_low, row_w0), (row_high, row_w1)):
        for col, col_weight in ((col_low, col_w0), (col_high, col_w1)):
            cell = (row[:, None] * cols + col[None, :]).to(dtype)
            tap = (row_weight[:, None] * col_weight[None, :]).expand(batch, height, width)
            weights += torch.bincount(
                (image_class + cell).reshape(-1), weights=tap.reshape(-1), minlength=size
            )
    return weights.view(batch, num_classes, rows, cols)


def _finish(pixels: torch.Tensor, map_sum: torch.Tensor, ignore: list[int], resolution: str) -> ClassScores:
    num_classes = pixels.shape[1]
    kept = torch.ones(num_classes, dtype=torch.bool, device=pixels.device)
    dropped = [i for i in ignore if 0 <= i < num_classes]
    kept[torch.tensor(dropped, dtype=torch.long, device=pixels.device)] = False
    present = (pixels > 0) & kept
    counted = pixels.double() * kept
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=pixels.device)
    area_share = counted / counted.sum(dim=1, keepdim=True)
    mass = map_sum * kept
    mass_share = mass / mass.sum(dim=1, keepdim=True)
    score = map_sum / pixels.double()
    return ClassScores(
        pixels=pixels,
        map_sum=torch.where(present, map_sum, nan),
        score=torch.where(present, score, nan),
        mass_share=torch.where(present, mass_share, nan),
        area_share=torch.where(present, area_share, nan),
        lift=torch.where(present, mass_share / area_share, nan),
        present=present,
        resolution=resolution,
    )
