"""GradSUM scores per image and class on the device: bincounts over the pixels, no per-class loop."""

from __future__ import annotations

import math
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
    """Per image × class figures, each a (B, C) tensor; NaN where the class is absent or ignored.

    `void_share` and `void_area_share` (B,) are what the profile cannot see: the share of each map's mass
    (NaN where the map's mass is 0) and of its pixels on void / ignored ids, from the same sums.
    """

    pixels: torch.Tensor
    map_sum: torch.Tensor
    score: torch.Tensor
    mass_share: torch.Tensor
    area_share: torch.Tensor
    lift: torch.Tensor
    present: torch.Tensor
    void_share: torch.Tensor
    void_area_share: torch.Tensor
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


_TENSOR_FIELDS = (
    "pixels",
    "map_sum",
    "score",
    "mass_share",
    "area_share",
    "lift",
    "present",
    "void_share",
    "void_area_share",
)


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
    if resolution == "grid":
        weights = _cell_counts(labels, grid, num_classes)
        pixels = weights.sum(dim=(2, 3)).long()
    else:
        weights, pixels = _bilinear_weights(labels, grid, num_classes)
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


def _label_sums(
    maps: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, map_sum = [], []
    # One image at a time: the class ids are the bincount index as they are (uint8 stays uint8, no
    # batch × class index to build) and the float64 map is one image, not the batch.
    for image, image_map in zip(labels, maps, strict=True):
        ids = image.reshape(-1)
        pixels.append(torch.bincount(ids, minlength=num_classes))
        # float64 throughout: a class can hold millions of pixels, float32 sums drift in the 5th digit,
        # and upsampling straight to float64 saves converting a float32 upsample.
        upsampled = image_map.double()
        if image_map.shape != image.shape:
            upsampled = F.interpolate(
                upsampled[None, None], size=image.shape, mode="bilinear", align_corners=False
            )
        map_sum.append(torch.bincount(ids, weights=upsampled.reshape(-1), minlength=num_classes))
    return torch.stack(pixels), torch.stack(map_sum)


def _cell_of(size: int, cells: int, device: torch.device) -> torch.Tensor:
    # The cell holding each pixel's centre: floor((i + 0.5) * cells / size), in exact integers.
    return ((2 * torch.arange(size, device=device) + 1) * cells) // (2 * size)


def _index_dtype(size: int) -> torch.dtype:
    return torch.int32 if size < 2**31 else torch.int64


def _per_image_counts(
    labels: torch.Tensor, base: torch.Tensor, stride: int, size: int, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """bincount of `label * stride + base` over each image: (B, size), float64 when weighted."""
    base = base.to(_index_dtype(size))
    flat_weights = None if weights is None else weights.reshape(-1)
    counts = [
        torch.bincount(torch.add(base, image, alpha=stride).reshape(-1), flat_weights, minlength=size)
        for image in labels
    ]
    return torch.stack(counts)


def _cell_counts(labels: torch.Tensor, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    batch, height, width = labels.shape
    rows, cols = grid
    cell = _cell_of(height, rows, labels.device)[:, None] * cols + _cell_of(width, cols, labels.device)
    counts = _per_image_counts(labels, cell, rows * cols, num_classes * rows * cols)
    return counts.view(batch, num_classes, rows, cols).double()


@dataclass(frozen=True)
class _AxisBins:
    """One axis of F.interpolate(bilinear, align_corners=False) from `cells` grid cells to `size` pixels.

    Pixel i reads cells low and high with weights 1 - f and f, f = frac / denominator in exact integers.
    Pixels are binned by their low cell (the clamped left edge apart); within a bin only f varies, so a
    class's weight on the bin's two cells follows from its pixel count and its sum of frac over the bin.
    """

    bin: torch.Tensor
    frac: torch.Tensor
    denominator: int
    num_bins: int

    def bound(self, weighted: bool) -> int:
        """The largest per-bin count (or, weighted, per-bin frac sum)."""
        values = self.frac if weighted else torch.ones_like(self.frac)
        return int(
            torch.zeros(self.num_bins, dtype=torch.int64).index_add_(0, self.bin.cpu(), values.cpu()).max()
        )


def _axis_bins(size: int, cells: int, device: torch.device) -> _AxisBins:
    # source = (i + 0.5) * cells / size - 0.5 = numerator / (2 * size), clamped at 0 as torch does.
    numerator = (2 * torch.arange(size, device=device) + 1) * cells - size
    clamped = numerator < 0
    numerator = numerator.clamp_min(0)
    low = numerator // (2 * size)
    # The clamped left edge gets a bin of its own (taps 0, 0; f = 0) so the regular bins stay small,
    # which keeps every moment sum few bits wide (see _pack_moments).
    divisor = math.gcd(cells, size)
    return _AxisBins(
        bin=torch.where(clamped, 0, low + 1),
        frac=(numerator - 2 * size * low) // divisor,
        denominator=2 * size // divisor,
        num_bins=cells + 1,
    )


#: Each moment: (weighted along y, weighted along x). Count, sum of fx, sum of fy, sum of fy * fx.
_MOMENTS = ((False, False), (False, True), (True, False), (True, True))
#: Integers below 2**53 add exactly in float64.
_MANTISSA_BITS = 53


def _pack_moments(rows: _AxisBins, cols: _AxisBins) -> list[list[tuple[int, int]]]:
    """Moments grouped into float64 words as (moment, bit shift): one weighted bincount per word."""
    words: list[list[tuple[int, int]]] = [[]]
    used = 0
    for moment, (along_y, along_x) in enumerate(_MOMENTS):
        bits = (rows.bound(along_y) * cols.bound(along_x)).bit_length()
        if used + bits > _MANTISSA_BITS:
            words.append([])
            used = 0
        words[-1].append((moment, used))
        used += bits
    return words


def _bilinear_weights(
    labels: torch.Tensor, grid: tuple[int, int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class cell weights (B, C, h, w) of bilinear upsampling and pixel counts (B, C), in float64."""
    batch, height, width = labels.shape
    device = labels.device
    rows, cols = _axis_bins(height, grid[0], device), _axis_bins(width, grid[1], device)
    bins = rows.num_bins * cols.num_bins
    # Index (class, row bin, column bin) per image: the label times the bins per class plus this base.
    base = rows.bin[:, None] * cols.num_bins + cols.bin
    moments: list[torch.Tensor] = [torch.empty(0)] * len(_MOMENTS)
    for word in _pack_moments(rows, cols):
        # Integer-valued weights below 2**53: the float64 sums are exact, the moments unpack losslessly.
        # The word is Σ_m 2**shift_m · y_m ⊗ x_m, one small matrix product (exact: integer products).
        y = torch.stack([_moment_factor(rows, _MOMENTS[m][0]) * 2.0**shift for m, shift in word], dim=1)
        x = torch.stack([_moment_factor(cols, _MOMENTS[m][1]) for m, _ in word])
        packed = _per_image_counts(labels, base, bins, num_classes * bins, y @ x).long()
        packed = packed.view(batch, num_classes, rows.num_bins, cols.num_bins)
        for position, (moment, shift) in enumerate(word):
            field = packed >> shift if shift else packed
            if position + 1 < len(word):
                field = field & ((1 << (word[position + 1][1] - shift)) - 1)
            moments[moment] = field
    count, sum_x, sum_y, sum_xy = moments
    # Σ(1-fx) and Σfx of a bin go to its low and high columns, once unweighted and once weighted by fy;
    # then along rows Σ(1-fy)·… = unweighted - weighted goes to the low row and the weighted to the high
    # one. In int64 units of 1 / (denominator_y · denominator_x) all of it is exact.
    unweighted = _spread(count * cols.denominator - sum_x, sum_x, grid[1], dim=3) * rows.denominator
    weighted = _spread(sum_y * cols.denominator - sum_xy, sum_xy, grid[1], dim=3)
    weights = _spread(unweighted - weighted, weighted, grid[0], dim=2)
    return weights.double() / (rows.denominator * cols.denominator), count.sum(dim=(2, 3))


def _moment_factor(axis: _AxisBins, weighted: bool) -> torch.Tensor:
    return axis.frac.double() if weighted else torch.ones_like(axis.frac, dtype=torch.float64)


def _spread(low: torch.Tensor, high: torch.Tensor, cells: int, dim: int) -> torch.Tensor:
    """Bin sums along `dim` added onto each bin's low and high cell (see _axis_bins).

    Bin k reads cells max(k - 1, 0) and min(k, cells - 1): two shifted slices and the two edge cells.
    """
    out = low.narrow(dim, 1, cells) + high.narrow(dim, 0, cells)
    out.narrow(dim, 0, 1).add_(low.narrow(dim, 0, 1))
    out.narrow(dim, cells - 1, 1).add_(high.narrow(dim, cells, 1))
    return out


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
    # Every pixel (or grid cell's weight) carries exactly one id, so the row sums are the map's whole mass
    # and area, at the resolution the class sums were taken.
    total = map_sum.sum(dim=1)
    void_mass = (map_sum * ~kept).sum(dim=1)
    void_share = torch.where(total != 0, void_mass / torch.where(total != 0, total, 1.0), nan)
    void_area_share = (pixels.double() * ~kept).sum(dim=1) / pixels.double().sum(dim=1)
    return ClassScores(
        pixels=pixels,
        map_sum=torch.where(present, map_sum, nan),
        score=torch.where(present, score, nan),
        mass_share=torch.where(present, mass_share, nan),
        area_share=torch.where(present, area_share, nan),
        lift=torch.where(present, mass_share / area_share, nan),
        present=present,
        void_share=void_share,
        void_area_share=void_area_share,
        resolution=resolution,
    )


class LabelBatch:
    """One batch's label maps, with their per-class cell weights prepared once per map grid.

    Every model and method of a batch reads the same labels; when a map is smaller than the labels, the
    weights that pool labels onto its grid are computed once and reused (aggregation then costs one
    small matrix product per map).
    """

    def __init__(self, labels: torch.Tensor, resolution: str) -> None:
        self.labels, self.resolution = labels, resolution
        self._prepared: dict[tuple[int, int], ClassWeights] = {}

    def scores(self, maps: torch.Tensor) -> ClassScores:
        """GradSUM scores of `maps` (B, h, w) against these labels."""
        grid = (int(maps.shape[-2]), int(maps.shape[-1]))
        if grid == tuple(self.labels.shape[-2:]):
            return class_scores(maps, self.labels, resolution=self.resolution)
        if grid not in self._prepared:
            self._prepared[grid] = prepare_labels(self.labels, grid, resolution=self.resolution)
        return class_scores(maps, self._prepared[grid])
