"""A method's `postprocess` in a run config reaches `attribute` for the profiles and the trust checks."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution.normalise import minmax
from gradsum.errors import GradSUMError
from gradsum.evaluation.base import planned_maps
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline import config_from_dict
from gradsum.pipeline.inputs import check_names
from gradsum.pipeline.profiler import _attribute
from gradsum.pipeline.trust import planned_methods


class SignedPixels(nn.Module):
    """Output = Σ (R − G) over pixels, so input × gradient is R − G per pixel: signed."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False))
        with torch.no_grad():
            self.features[0].weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1).sum(dim=1, keepdim=True)


CONFIG = {
    "name": "signed",
    "models": [{"name": "signed", "spec": "pilotnet"}],
    "methods": [
        {"method": "input_x_gradient", "label": "ixg_abs", "postprocess": ["abs"]},
        {"method": "input_x_gradient"},
    ],
    "targets": {"steering": "output"},
}


def test_config_postprocess_is_applied_and_recorded() -> None:
    config = config_from_dict(CONFIG)
    check_names(config)
    model = LoadedModel("signed", SignedPixels(), {}, "steering", (8, 16))
    batch = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    expected_raw = batch[:, 0] - batch[:, 1]  # x · ∂f/∂x = (R·1 + G·(−1) + B·0) per pixel
    with_abs, plain = (_attribute(model, method, batch, config, ["a", "b"]) for method in config.methods)
    torch.testing.assert_close(with_abs.raw, expected_raw)
    assert with_abs.steps == ("abs", "normalise minmax") and plain.steps == ("normalise minmax",)
    torch.testing.assert_close(with_abs.maps, minmax(expected_raw.abs()))
    planned = planned_methods(model, config)
    assert [p.postprocess for p in planned[:2]] == [("abs",), None]
    trust_maps = planned_maps(model, planned[0], batch, torch.zeros(2, 8, 16, dtype=torch.long), "output")
    torch.testing.assert_close(trust_maps, with_abs.maps)


def test_unknown_step_in_a_config_names_the_field_and_the_valid_steps() -> None:
    bad = {**CONFIG, "methods": [{"method": "gradcam", "postprocess": ["relu", "clip"]}]}
    with pytest.raises(GradSUMError, match=r"methods\[0\]\.postprocess\[1\].*valid: abs, minmax, relu, sum"):
        check_names(config_from_dict(bad))
