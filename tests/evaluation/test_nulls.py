"""Null explainers: their roles, the positional prior (the mean training cause mask) and the model-free
dispatch of `EvaluationContext.maps`, checked against maps computed by hand."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradsum.errors import GradSUMError
from gradsum.evaluation import nulls
from gradsum.evaluation.base import (
    CHANCE,
    CONFOUND,
    HEURISTIC,
    MODEL_FREE_MAPS,
    EvaluationContext,
    PlannedMethod,
    images_of,
    planned_maps,
)
from gradsum.evaluation.nulls import NULL_EXPLAINERS, PRIOR_SCENES, mean_cause_mask, positional_prior
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet, CauseDeclaration, open_truthset
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate

SIZE = (2, 3)
#: road (7) everywhere but one sky (23) pixel and one car (26) pixel
LABELS = np.array([[23, 7, 7], [7, 7, 26]], dtype=np.uint8)
CLASS_AREA = next(m for m in NULL_EXPLAINERS if m.method == "class_area")
PRIOR = next(m for m in NULL_EXPLAINERS if m.method == "positional_prior")


class HandMasks(ArrayTruthSet):
    """A truth set of 2×3 frames whose cause masks are given by hand (None: no mask)."""

    def __init__(self, masks: Sequence[np.ndarray | None], split: str, causes: bool = True) -> None:
        count = len(masks)
        super().__init__(
            np.zeros((count, *SIZE, 3), np.uint8), np.stack([LABELS] * count), {"steering": np.zeros(count)}
        )
        self.split = split
        self._masks = list(masks)
        self._causes = (
            {"steering": CauseDeclaration(causal=("road",), independent=("sky",))} if causes else {}
        )

    @property
    def causes(self) -> Mapping[str, CauseDeclaration]:
        return self._causes

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        return self._masks[index]


def _model(task: str = "steering") -> LoadedModel:
    return LoadedModel("m", nn.Identity(), {}, task, SIZE)


def _context(truthset: ArrayTruthSet, methods: Sequence[PlannedMethod] = ()) -> EvaluationContext:
    return EvaluationContext(truthset, range(len(truthset)), [_model()], {"m": list(methods)}, {})


def _maps(context: EvaluationContext, method: PlannedMethod, indices: Sequence[int] | None = None) -> Tensor:
    ids, images, labels, _ = next(context.batches())
    batch = context.model_input(context.models[0], images)
    return context.maps(context.models[0], method, batch, torch.from_numpy(np.stack(labels)), ids, indices)


def test_each_null_has_its_role() -> None:
    roles = {m.label: m.role for m in NULL_EXPLAINERS}
    assert roles == {
        "null:random": CHANCE,
        "null:uniform": CHANCE,
        "null:sobel": HEURISTIC,
        "null:class_area": CONFOUND,
        "null:positional_prior": CONFOUND,
    }
    assert all(m.null and m.model_free for m in NULL_EXPLAINERS)
    assert PRIOR.normalise == "raw"


def test_the_class_area_prior_goes_through_the_model_free_dispatch() -> None:
    context = _context(HandMasks([None, None], "test"))
    # by hand: road holds 4 of 6 pixels, sky and car 1 each
    expected = torch.tensor([[1 / 6, 4 / 6, 4 / 6], [4 / 6, 4 / 6, 1 / 6]])
    maps = _maps(context, CLASS_AREA)
    assert torch.allclose(maps, expected.expand(2, *SIZE))


def test_the_positional_prior_is_the_mean_training_cause_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    train_masks = [
        np.array([[1, 1, 0], [0, 0, 0]], bool),
        None,  # no mask (an obstacle negative, say): left out of the mean
        np.array([[1, 0, 0], [0, 1, 0]], bool),
        np.array([[1, 0, 0], [0, 0, 1]], bool),
    ]
    train = HandMasks(train_masks, "train")
    opened: list[tuple[Path, str, str | None]] = []

    def open_train(root: Path, split: str, kind: str | None = None) -> HandMasks:
        opened.append((root, split, kind))
        return train

    monkeypatch.setattr(nulls, "open_truthset", open_train)
    # the evaluated images' own masks play no part
    context = _context(HandMasks([np.ones(SIZE, bool)] * 2, "test"), [PRIOR])
    maps = _maps(context, PRIOR)
    # by hand: column sums over the three masks / 3
    expected = torch.tensor([[3 / 3, 1 / 3, 0.0], [0.0, 1 / 3, 1 / 3]])
    assert torch.allclose(maps, expected.expand(2, *SIZE))
    assert opened == [(Path("<memory>"), "train", "array")]
    # kept per (root, task, size): another batch of the same model reads no train split again
    assert torch.equal(positional_prior(context, "steering", SIZE), expected)
    assert len(opened) == 1


def test_the_positional_prior_reads_only_the_first_training_scenes() -> None:
    first = np.array([[1, 0, 0], [0, 0, 0]], bool)
    late = np.ones(SIZE, bool)
    train = HandMasks([first] * PRIOR_SCENES + [late] * 2, "train")
    prior = mean_cause_mask(train, "steering")
    assert prior is not None and np.array_equal(prior, first.astype(float))


def test_the_positional_prior_is_uniform_without_causes_or_a_train_split(
    caplog: pytest.LogCaptureFixture,
) -> None:
    uniform = torch.full(SIZE, 1 / 6)
    with caplog.at_level(logging.WARNING, logger="gradsum.evaluation.nulls"):
        undeclared = _maps(_context(HandMasks([None, None], "test", causes=False)), PRIOR)
    assert torch.allclose(undeclared, uniform.expand(2, *SIZE))
    assert "declares no causes for task 'steering'" in caplog.text
    caplog.clear()
    # causes declared, but an in-memory set has no train split to open
    with caplog.at_level(logging.WARNING, logger="gradsum.evaluation.nulls"):
        unopened = _maps(_context(HandMasks([None, None], "test")), PRIOR)
    assert torch.allclose(unopened, uniform.expand(2, *SIZE))
    assert "no 'train' split" in caplog.text


def test_the_positional_prior_on_a_synthetic_set(tmp_path: Path) -> None:
    root = generate(tmp_path / "set", count=10, seed=2, size=(32, 64))
    test = open_truthset(root, "test")
    train = open_truthset(root, "train")
    assert isinstance(test, SyntheticTruthSet) and isinstance(train, SyntheticTruthSet)
    context = EvaluationContext(test, range(len(test)), [_model("obstacle")], {}, {})
    masks = [train.cause_mask(i, "obstacle") for i in range(len(train))]
    present = [m.astype(float) for m in masks if m is not None]
    assert present and len(present) < len(masks)  # negatives exist and are left out
    assert np.allclose(positional_prior(context, "obstacle", (32, 64)).numpy(), np.mean(present, axis=0))
    steering = [train.cause_mask(i, "steering") for i in range(len(train))]
    expected = np.mean([m.astype(float) for m in steering if m is not None], axis=0)
    assert np.allclose(positional_prior(context, "steering", (32, 64)).numpy(), expected)


def test_model_free_maps_are_computed_once_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []

    def counting(
        context: EvaluationContext,
        model: LoadedModel,
        method: PlannedMethod,
        labels: Tensor,
        ids: Sequence[str] | None,
        indices: Sequence[int] | None,
        size: tuple[int, int],
    ) -> Tensor:
        _, found = images_of(context, ids, indices, method.method)
        calls.append(found)
        return torch.stack([torch.full(size, float(index)) for index in found])

    monkeypatch.setitem(MODEL_FREE_MAPS._entries, "counting", counting)
    method = PlannedMethod("counting", label="control:counting", normalise="raw", role="control")
    context = _context(HandMasks([None] * 3, "test"))
    first = _maps(context, method, [0, 1, 2])
    assert torch.equal(first[:, 0, 0], torch.tensor([0.0, 1.0, 2.0]))
    # no indices: looked up from the ids, and the cached maps are reused anyway
    assert torch.equal(_maps(context, method), first)
    assert calls == [[0, 1, 2]]
    # a fresh context looks the indices up from the ids
    fresh = _context(HandMasks([None] * 3, "test"))
    assert torch.equal(_maps(fresh, method), first)
    assert calls == [[0, 1, 2], [0, 1, 2]]


def test_model_free_methods_refuse_a_module_and_a_missing_context() -> None:
    batch, labels = torch.zeros(1, 3, *SIZE), torch.from_numpy(LABELS[None])
    for null in NULL_EXPLAINERS:
        with pytest.raises(GradSUMError, match="model-free"):
            planned_maps(_model(), null, batch, labels, "direction", module=nn.Identity())
    with pytest.raises(GradSUMError, match=r"not the model; call EvaluationContext\.maps"):
        planned_maps(_model(), CLASS_AREA, batch, labels, "direction")
    # the priors need no ids; a per-image control does
    context = _context(HandMasks([None], "test"))
    assert torch.allclose(
        context.maps(_model(), CLASS_AREA, batch, labels),
        torch.tensor([[[1 / 6, 4 / 6, 4 / 6], [4 / 6, 4 / 6, 1 / 6]]]),
    )
    oracle = PlannedMethod("oracle", label="control:oracle", normalise="raw", role="control")
    with pytest.raises(GradSUMError, match=r"'oracle' is read per image: call EvaluationContext\.maps with"):
        context.maps(_model(), oracle, batch, labels)


def test_importing_the_package_registers_every_model_free_map() -> None:
    # base reads the registry and imports neither filler: the package's import registers them
    from gradsum.evaluation.controls import CONTROL_EXPLAINERS

    expected = {nulls.CLASS_AREA, nulls.POSITIONAL_PRIOR} | {m.method for m in CONTROL_EXPLAINERS}
    assert expected <= set(MODEL_FREE_MAPS.names())
