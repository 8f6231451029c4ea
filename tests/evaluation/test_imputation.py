from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from scipy.ndimage import gaussian_filter

from gradsum.evaluation.imputation import FastNoisyLinearImputer, ImputationError, imputation_system

SHAPE = (24, 40)
#: on [0, 1] images; the library rounds its float64 solution to float32, which alone differs by ~6e-8
TOLERANCE = 1e-5


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _kept(relevance: np.ndarray, fraction: float) -> torch.Tensor:
    """1 where kept: the `fraction` of pixels with the highest relevance go, as ROAD removes them."""
    return torch.from_numpy(np.float32(relevance < np.percentile(relevance, 100 * (1 - fraction))))


def _masks() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    corner = -np.hypot(rows, cols)  # a quarter disc on the top-left corner: touches two borders
    blobs = gaussian_filter(rng.standard_normal(SHAPE), 3)  # several regions, some on the borders
    masks = {
        f"{name}@{f}": _kept(relevance, f)
        for name, relevance in (("random", rng.random(SHAPE)), ("blobs", blobs), ("corner", corner))
        for f in (0.1, 0.5, 0.9)
    }
    masks["frame"] = torch.ones(SHAPE)
    masks["frame"][0], masks["frame"][-1], masks["frame"][:, 0], masks["frame"][:, -1] = 0, 0, 0, 0
    one_pixel = torch.zeros(SHAPE)
    one_pixel[7, 31] = 1.0
    masks["all but one pixel"] = one_pixel
    return masks


MASKS = _masks()


@pytest.mark.parametrize("name", MASKS)
def test_equals_pytorch_grad_cams_noisy_linear_imputer_without_noise(name: str) -> None:
    image, kept = _image(), MASKS[name]
    theirs = NoisyLinearImputer(noise=0.0)(image, kept)
    ours = FastNoisyLinearImputer(noise=0.0)(image, kept)
    assert float((ours - theirs).abs().max()) <= TOLERANCE
    # the kept pixels are untouched and every removed pixel is imputed
    assert torch.equal(ours[:, kept == 1], image[:, kept == 1])


def test_the_system_is_the_librarys_entry_for_entry_and_symmetric() -> None:
    image, kept = _image(1), MASKS["blobs@0.5"]
    theirs_matrix, theirs_rhs = NoisyLinearImputer.setup_sparse_system(
        kept.numpy(), image.numpy(), NoisyLinearImputer().weighting
    )
    system = imputation_system(image.numpy(), kept.numpy())
    assert (system.matrix != theirs_matrix.tocsc()).nnz == 0
    assert np.array_equal(system.rhs, theirs_rhs)
    assert (system.matrix != system.matrix.T).nnz == 0


def test_noise_is_drawn_as_the_library_draws_it_and_the_seed_fixes_it() -> None:
    image, kept = _image(2), MASKS["corner@0.5"]
    torch.manual_seed(5)
    theirs = NoisyLinearImputer(noise=0.05)(image, kept)
    torch.manual_seed(5)
    ours = FastNoisyLinearImputer(noise=0.05)(image, kept)
    torch.manual_seed(5)
    again = FastNoisyLinearImputer(noise=0.05)(image, kept)
    assert float((ours - theirs).abs().max()) <= TOLERANCE
    assert torch.equal(ours, again)
    # the noise is there: it moves the imputed pixels off the noiseless solution
    assert float((ours - FastNoisyLinearImputer(noise=0.0)(image, kept)).abs().max()) > 0.05


def test_nothing_removed_returns_the_image_and_everything_removed_is_an_error() -> None:
    image = _image(3)
    assert torch.equal(FastNoisyLinearImputer()(image, torch.ones(SHAPE)), image)
    with pytest.raises(ImputationError, match="every pixel is removed"):
        FastNoisyLinearImputer()(image, torch.zeros(SHAPE))
    with pytest.raises(ImputationError, match="shape"):
        FastNoisyLinearImputer()(image, torch.ones(4, 4))
