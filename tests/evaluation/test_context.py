"""The evaluation context: maps computed once per image and reused by the checks that follow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradsum.evaluation import base
from gradsum.evaluation.base import EvaluationContext, PlannedMethod
from gradsum.models import build_model
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet

SIZE = (64, 128)


def _context(cache_bytes: int) -> tuple[EvaluationContext, LoadedModel]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, *SIZE, 3), dtype=np.uint8)
    labels = rng.choice(np.array([7, 8, 23], dtype=np.uint8), size=(4, *SIZE))
    torch.manual_seed(0)
    model = LoadedModel("cnn", build_model("pilotnet", SIZE).eval(), {}, "steering", SIZE)
    context = EvaluationContext(
        ArrayTruthSet(images, labels),
        range(4),
        [model],
        {},
        {"steering": "direction"},
        map_cache_bytes=cache_bytes,
    )
    return context, model


def test_maps_are_computed_once_per_image_and_method(monkeypatch: pytest.MonkeyPatch) -> None:
    context, model = _context(1 << 20)
    calls = []
    real = base.planned_maps

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(args[1])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(base, "planned_maps", counting)
    gradcam = PlannedMethod("gradcam", label="gradcam")
    ids, images, labels, _ = next(context.batches())
    batch, label_tensor = context.model_input(model, images), torch.from_numpy(np.stack(labels))
    first = context.maps(model, gradcam, batch, label_tensor, ids)
    again = context.maps(model, gradcam, batch, label_tensor, ids)
    subset = context.maps(model, gradcam, batch[1:3], label_tensor[1:3], ids[1:3])
    assert torch.equal(first, again) and torch.equal(subset, first[1:3])
    assert len(calls) == 1
    # without ids (a randomised copy, say) nothing is reused
    context.maps(model, gradcam, batch, label_tensor)
    assert len(calls) == 2


def test_the_cache_stops_at_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    context, model = _context(2 * SIZE[0] * SIZE[1] * 4)  # room for two float32 maps
    gradcam = PlannedMethod("gradcam", label="gradcam")
    ids, images, labels, _ = next(context.batches())
    batch, label_tensor = context.model_input(model, images), torch.from_numpy(np.stack(labels))
    maps = context.maps(model, gradcam, batch, label_tensor, ids)
    calls = []
    monkeypatch.setattr(base, "planned_maps", lambda *a, **k: calls.append(1) or maps[2:])
    assert torch.equal(context.maps(model, gradcam, batch[:2], label_tensor[:2], ids[:2]), maps[:2])
    assert not calls
    context.maps(model, gradcam, batch[2:], label_tensor[2:], ids[2:])
    assert calls == [1]
