"""The preflight: every method synth-v1 scores runs on every protocol model it applies to (untrained), and a
method that cannot is named, with its model, before anything trains."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, Method, register_method
from gradsum.attribution.base import Target
from gradsum.errors import AttributionError, SpecError
from gradsum.leaderboard.layers import swept_methods
from gradsum.leaderboard.preflight import preflight
from gradsum.leaderboard.protocol import load_protocol
from gradsum.leaderboard.runner import protocol_methods
from gradsum.taxonomy import FAMILIES

BROKEN = "preflight_broken_on_vits"


@pytest.fixture
def broken() -> Iterator[str]:
    @register_method(BROKEN)
    class BrokenOnVits(Method):
        description = "the input's mean on CNNs; refuses transformers"
        applies_to = frozenset(FAMILIES)
        uses_layer = False

        def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
            if hasattr(model, "blocks"):
                raise AttributionError("this method cannot read a transformer")
            return images.mean(dim=1)

    yield BROKEN
    METHODS.unregister(BROKEN)


@pytest.mark.slow
def test_every_method_synth_v1_scores_runs_on_every_model_it_applies_to() -> None:
    # the whole list the leaderboard runs (ShapleyCAM on the hybrid once failed after 37 minutes of training)
    protocol = load_protocol("synth-v1")
    methods = protocol_methods(protocol)
    assert {"shapleycam", "guided_gradcam", *swept_methods(protocol)} <= {m["method"] for m in methods}
    torch.manual_seed(0)
    preflight(protocol, methods)


def test_a_method_that_cannot_run_is_named_with_every_model_it_fails_on(broken: str) -> None:
    protocol = load_protocol("synth-v1")
    with pytest.raises(SpecError) as caught:
        preflight(protocol, [{"method": "gradcam"}, {"method": broken}])
    message = str(caught.value)
    assert "protocol synth-v1: 3 method × model pair(s) cannot run, found before any training" in message
    for model in ("vit (vit)", "hybrid_vit (hybrid)", "vit_obstacle (vit)"):
        assert f"{broken} on {model}: " in message
    assert "this method cannot read a transformer" in message
    assert "gradcam on" not in message and f"{broken} on pilotnet" not in message
