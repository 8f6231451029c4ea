"""ROAD's noisy linear imputation (Rong et al. 2022, arXiv 2202.00449), set up and solved fast.

pytorch-grad-cam's `NoisyLinearImputer` writes one equation per removed pixel: the pixel equals the
weighted mean of its in-image 8-neighbours (weights 1/6 on edges, 1/12 on diagonals, renormalised by
dropping the neighbours outside the image), known neighbours moving to the right-hand side. It fills the
matrix entry by entry in a `lil_matrix` and solves with `spsolve`, which dominates the ROAD check's cost.
`FastNoisyLinearImputer` builds the same matrix from index arrays and factorises it once for the three
channels. The matrix is symmetric (the weights are) and its negation is diagonally dominant, strictly in
every row with a known neighbour; each connected region of removed pixels touches a known pixel unless
nothing is kept, so the negation is positive definite and a symmetric fill-reducing ordering with no
pivoting (SuperLU's minimum degree on AᵀA + A, diagonal pivots) factorises it stably. The noise is added
exactly as pytorch-grad-cam adds it, so a seeded run draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import numpy as np
import torch
from pytorch_grad_cam.metrics.road import neighbors_weights
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.ndimage import find_objects, label
from scipy.sparse import csc_matrix
from threadpoolctl import threadpool_limits
from torch import Tensor

from gradsum.errors import GradSUMError


class ImputationError(GradSUMError):
    """A mask the imputation cannot fill (nothing kept, or a mask that does not match the image)."""


class Imputer(Protocol):
    """What pytorch-grad-cam's `RemoveMostRelevantFirst` calls: (image (C,H,W), kept (H,W)) → image."""

    def __call__(self, img: Tensor, mask: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ImputationSystem:
    """A · x = `rhs` for the removed pixels `removed` (flat indices, row-major), one column per channel.

    A is stored as its diagonal and its off-diagonal `couplings` (row, column, weight), as the band
    solver reads them; `matrix` assembles it.
    """

    diagonal: np.ndarray
    couplings: tuple[np.ndarray, np.ndarray, np.ndarray]
    rhs: np.ndarray
    removed: np.ndarray
    #: (H, W) of the image
    shape: tuple[int, int]

    @property
    def matrix(self) -> csc_matrix:
        """A as a sparse matrix."""
        rows, cols, weights = self.couplings
        diagonal = np.arange(self.removed.size)
        return csc_matrix(
            (np.concatenate([weights, self.diagonal]), (np.r_[rows, diagonal], np.r_[cols, diagonal])),
            shape=(self.removed.size, self.removed.size),
        )


# a pixel's state on the image padded by one pixel all round
_OUTSIDE, _KNOWN, _REMOVED = 0, 1, 2


def imputation_system(image: np.ndarray, kept: np.ndarray) -> ImputationSystem:
    """pytorch-grad-cam's `setup_sparse_system` for `image` (C,H,W) and `kept` (H,W, nonzero = known).

    Row i: −(sum of the in-image neighbour weights) on the diagonal, the weight of every removed
    neighbour in its column, −Σ weight · value of the known neighbours on the right-hand side, summed
    in the library's neighbour order so the right-hand side matches it bit for bit.
    """
    height, width = kept.shape
    if not np.any(kept):
        raise ImputationError("imputation mask: every pixel is removed, nothing to impute from")
    # on the padded grid every neighbour offset is one constant shift of the flat index
    state = np.full((height + 2, width + 2), _OUTSIDE, dtype=np.int8)
    state[1:-1, 1:-1] = np.where(kept != 0, _KNOWN, _REMOVED)
    flat_state = state.reshape(-1)
    removed_padded = np.flatnonzero(flat_state == _REMOVED)
    # known values, 0 elsewhere: removed and outside neighbours then add nothing to the right-hand side;
    # in the image dtype, as the library multiplies the weights in it before adding to the float64 rhs
    known_values = np.zeros((flat_state.size, image.shape[0]), dtype=image.dtype)
    known_values[flat_state == _KNOWN] = image.reshape(image.shape[0], -1).T[kept.reshape(-1) != 0]
    variable = np.full(flat_state.size, -1, dtype=np.int64)
    variable[removed_padded] = np.arange(removed_padded.size)
    # the library starts each row at 1 (the weights' sum) and subtracts the out-of-image weights
    diagonal = np.ones(removed_padded.size)
    rhs = np.zeros((removed_padded.size, image.shape[0]))
    rows, cols, weights = [], [], []
    for (dy, dx), weight in neighbors_weights:
        neighbour = removed_padded + dy * (width + 2) + dx
        neighbour_state = flat_state[neighbour]
        diagonal[neighbour_state == _OUTSIDE] -= weight
        rhs -= weight * known_values[neighbour]
        coupled = np.flatnonzero(neighbour_state == _REMOVED)
        rows.append(coupled)
        cols.append(variable[neighbour[coupled]])
        weights.append(np.full(coupled.size, weight))
    padded_rows, padded_cols = np.divmod(removed_padded, width + 2)
    removed = (padded_rows - 1) * width + padded_cols - 1
    couplings = (np.concatenate(rows), np.concatenate(cols), np.concatenate(weights))
    return ImputationSystem(-diagonal, couplings, rhs, removed, (height, width))


#: 8-connectivity: the stencil couples diagonal neighbours, so they belong to one region
_CONNECTIVITY = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class BandBlocks:
    """An ordering of the removed pixels that splits −A into independent band blocks, each narrow."""

    #: system indices in solving order
    order: np.ndarray
    #: block k holds `order[bounds[k]:bounds[k + 1]]`
    bounds: np.ndarray


def band_blocks(system: ImputationSystem) -> BandBlocks:
    """Connected regions of removed pixels, each walked along its shorter side, grouped by width.

    A region walked column by column couples pixels at most (its height + 1) places apart (row by row:
    its width + 1), so −A restricted to it is a band matrix of about its shorter side. Regions never
    couple, so regions of similar width (within a factor 2) share one band factorisation, whose cost
    n · width² then stays near the sum of the regions' own.
    """
    height, width = system.shape
    image = np.zeros(height * width, dtype=bool)
    image[system.removed] = True
    labels, _ = label(image.reshape(height, width), structure=_CONNECTIVITY)
    boxes = find_objects(labels)
    extent = np.array([(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes if b is not None])
    by_column = extent[:, 0] <= extent[:, 1]
    group = np.log2(extent.min(1) + 1).astype(np.int64)
    region = labels.reshape(-1)[system.removed] - 1
    rows, cols = np.divmod(system.removed, width)
    column_first = by_column[region]
    major, minor = np.where(column_first, cols, rows), np.where(column_first, rows, cols)
    pixel_group = group[region]
    order = np.lexsort((minor, major, region, pixel_group))
    bounds = np.searchsorted(pixel_group[order], np.arange(pixel_group.max() + 2))
    return BandBlocks(order, np.unique(bounds))


def solve_system(system: ImputationSystem) -> np.ndarray:
    """(N, C) solution of `system` by banded Cholesky of the SPD −A, one factorisation per band block.

    On 96 × 192 images this beats SuperLU's general sparse LU (with any of its orderings, nested
    dissection included) 2–4× for one region filling the image and much more for separate regions.
    """
    if system.removed.size == 0:
        return system.rhs
    blocks = band_blocks(system)
    position = np.empty_like(blocks.order)
    position[blocks.order] = np.arange(blocks.order.size)
    # −A's upper triangle in band positions: the diagonal, then each coupling once
    rows, cols, weights = system.couplings
    i, j = position[rows], position[cols]
    upper = j > i
    i = np.r_[position, i[upper]]
    j = np.r_[position, j[upper]]
    values = -np.r_[system.diagonal, weights[upper]]
    block = np.searchsorted(blocks.bounds, j, side="right") - 1
    solution = np.empty_like(system.rhs)
    # one BLAS thread: these small banded solves run 50-150x slower (wall and CPU) when OpenBLAS spreads
    # them over threads on a machine that is busy with anything else (measured on the 2-core CI machine)
    with threadpool_limits(1, user_api="blas"):
        _solve_blocks(blocks, block, i, j, values, system.rhs, solution)
    return solution


def _solve_blocks(
    blocks: BandBlocks,
    block: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    values: np.ndarray,
    rhs: np.ndarray,
    solution: np.ndarray,
) -> None:
    """Factorise and solve each band block of −A in place of `solution`."""
    for k, (first, stop) in enumerate(pairwise(blocks.bounds.tolist())):
        mine = block == k
        offset = j[mine] - i[mine]
        width = int(offset.max())
        band = np.zeros((width + 1, stop - first))
        band[width - offset, j[mine] - first] = values[mine]
        factor = cholesky_banded(band, check_finite=False)
        variables = blocks.order[first:stop]
        solution[variables] = cho_solve_banded((factor, False), -rhs[variables], check_finite=False)


@dataclass(frozen=True)
class FastNoisyLinearImputer:
    """Drop-in for pytorch-grad-cam's `NoisyLinearImputer`: same system, same noise draws, faster solve."""

    #: magnitude of the Gaussian noise added to the imputed pixels (absolute, 0 for none)
    noise: float = 0.01

    def __call__(self, img: Tensor, mask: Tensor) -> Tensor:
        """`img` (C,H,W) on the CPU with the pixels where `mask` (H,W) is 0 imputed from the others."""
        if mask.shape != img.shape[-2:]:
            raise ImputationError(
                f"imputation mask: shape {tuple(mask.shape)} != image {tuple(img.shape[-2:])}"
            )
        system = imputation_system(img.numpy(), mask.numpy())
        values = torch.tensor(solve_system(system), dtype=torch.float)
        # as the library draws it: `randn_like` of its transposed solution, which spsolve returns
        # column-major, so the transpose is a contiguous (C, N) tensor (a strided one would draw other numbers)
        noise = torch.randn(values.shape[1], values.shape[0])
        filled = img.reshape(img.shape[0], -1).clone()
        filled[:, torch.from_numpy(system.removed)] = values.t() + self.noise * noise
        return filled.reshape_as(img)
