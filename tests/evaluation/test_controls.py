"""Known-answer controls: the causal oracle and its mismatched twins (another model, task or image), and the
cause-mask oracle, checked against maps painted by hand from a hand-written effects table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from gradsum.evaluation.base import CONTROL, EvaluationContext, PlannedMethod
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.erasure import DEFAULT_FILLER
from gradsum.evaluation.referee import CAUSAL_EFFECT_COLUMNS, cached_causal_effects
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import ArrayTruthSet

ROAD, SKY, CAR = 7, 23, 26
#: three 2×4 frames (ids "0", "1", "2"): image 0 road 4 / sky 3 / car 1, image 1 road 6 / sky 2,
#: image 2 road 2 / sky 6
LABELS = np.array(
    [
        [[SKY, SKY, SKY, CAR], [ROAD, ROAD, ROAD, ROAD]],
        [[SKY, SKY, ROAD, ROAD], [ROAD, ROAD, ROAD, ROAD]],
        [[SKY, SKY, SKY, SKY], [SKY, SKY, ROAD, ROAD]],
    ],
    dtype=np.uint8,
)
SIZE = (2, 4)
#: (model, image) → class id → |Δ|; s1 and s2 steer, o1 detects obstacles
EFFECTS: dict[tuple[str, str], dict[int, float]] = {
    ("s1", "0"): {ROAD: 0.8, SKY: 0.3, CAR: 0.1},
    ("s1", "1"): {ROAD: 0.6, SKY: 0.2},
    ("s1", "2"): {ROAD: 0.4, SKY: 0.6},
    ("s2", "0"): {ROAD: 0.2, SKY: 0.9, CAR: 0.5},
    ("s2", "1"): {ROAD: 0.1},  # no sky row: sky gets 0
    ("s2", "2"): {ROAD: 0.5, SKY: 0.1},
    ("o1", "0"): {ROAD: 0.05, SKY: 0.01, CAR: 4.0},
    ("o1", "1"): {ROAD: 0.02, SKY: 0.01},
    ("o1", "2"): {ROAD: 0.03, SKY: 0.02},
}
CONTROLS = {m.method: m for m in CONTROL_EXPLAINERS}


class MaskedArrays(ArrayTruthSet):
    """Hand-written cause masks: image 0 the car, image 1 none (an obstacle negative), image 2 the road."""

    def cause_mask(self, index: int, task: str) -> np.ndarray | None:
        return None if index == 1 else self[index].labels == (CAR if index == 0 else ROAD)


def _effects_table(effects: Mapping[tuple[str, str], Mapping[int, float]]) -> pd.DataFrame:
    rows = []
    tasks = {"s1": "steering", "s2": "steering", "o1": "obstacle"}
    for (model, image), classes in effects.items():
        for class_id, effect in classes.items():
            row: dict[str, object] = dict.fromkeys(CAUSAL_EFFECT_COLUMNS, 0.0)
            row.update(model=model, task=tasks[model], image=image, class_id=class_id, abs_delta=effect)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(CAUSAL_EFFECT_COLUMNS))


def _model(name: str, task: str, size: tuple[int, int] = SIZE) -> LoadedModel:
    return LoadedModel(name, nn.Identity(), {}, task, size)


def _context(models: Sequence[LoadedModel]) -> EvaluationContext:
    images = np.zeros((len(LABELS), *SIZE, 3), np.uint8)
    context = EvaluationContext(
        MaskedArrays(images, LABELS), range(len(LABELS)), list(models), {m.name: [] for m in models}, {}
    )
    # the referee's effects as the causal check keeps them (so nothing is erased here)
    context.cache[f"causal_effects:{DEFAULT_FILLER}"] = _effects_table(EFFECTS)
    return context


MODELS = (_model("s1", "steering"), _model("s2", "steering"), _model("o1", "obstacle"))


def _maps(context: EvaluationContext, model: LoadedModel, method: PlannedMethod) -> Tensor:
    ids, images, labels, indices = next(context.batches())
    batch = context.model_input(model, images)
    return context.maps(model, method, batch, torch.from_numpy(np.stack(labels)), ids, indices)


def _painted(effects: Sequence[Mapping[int, float]]) -> Tensor:
    """By hand: each class's pixels hold effect / pixel count in that image (0 without an effect)."""
    expected = torch.zeros(len(LABELS), *SIZE)
    for row, (labels, classes) in enumerate(zip(LABELS, effects, strict=True)):
        for class_id in np.unique(labels):
            where = torch.from_numpy(labels == class_id)
            expected[row][where] = classes.get(int(class_id), 0.0) / int(where.sum())
    return expected


def test_controls_are_planned_as_raw_model_free_controls() -> None:
    assert [m.label for m in CONTROL_EXPLAINERS] == [
        "control:oracle",
        "control:other_model",
        "control:other_task",
        "control:other_image",
        "control:cause_mask",
    ]
    assert all(m.role == CONTROL and m.model_free and not m.null for m in CONTROL_EXPLAINERS)
    assert {m.normalise for m in CONTROL_EXPLAINERS} == {"raw"}


def test_the_oracle_sums_to_the_effects_on_every_class() -> None:
    context = _context(MODELS)
    maps = _maps(context, MODELS[0], CONTROLS["oracle"])
    # image 0 by hand: road 0.8 / 4 pixels, sky 0.3 / 3, car 0.1 / 1
    assert torch.allclose(maps[0], torch.tensor([[0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]]))
    for row, image in enumerate(("0", "1", "2")):
        for class_id, effect in EFFECTS[("s1", image)].items():
            total = maps[row][torch.from_numpy(LABELS[row] == class_id)].sum()
            assert float(total) == pytest.approx(effect)
    assert torch.allclose(maps, _painted([EFFECTS[("s1", image)] for image in "012"]))


def test_a_class_without_an_effect_gets_nothing() -> None:
    maps = _maps(_context(MODELS), MODELS[1], CONTROLS["oracle"])
    # s2 has no sky row on image 1: its two sky pixels are 0, its six road pixels 0.1 / 6
    assert torch.allclose(maps[1], torch.tensor([[0.0, 0.0, 0.1 / 6, 0.1 / 6], [0.1 / 6] * 4]))


def test_other_model_paints_the_next_model_of_the_task() -> None:
    context = _context(MODELS)
    for model, other in (("s1", "s2"), ("s2", "s1")):
        chosen = next(m for m in MODELS if m.name == model)
        maps = _maps(context, chosen, CONTROLS["other_model"])
        assert torch.allclose(maps, _painted([EFFECTS[(other, image)] for image in "012"]))
    # o1 is the only obstacle model: it takes the first model of the other task
    maps = _maps(context, MODELS[2], CONTROLS["other_model"])
    assert torch.allclose(maps, _painted([EFFECTS[("s1", image)] for image in "012"]))


def test_other_task_paints_the_first_model_of_another_task() -> None:
    context = _context(MODELS)
    for chosen, other in ((MODELS[0], "o1"), (MODELS[1], "o1"), (MODELS[2], "s1")):
        maps = _maps(context, chosen, CONTROLS["other_task"])
        assert torch.allclose(maps, _painted([EFFECTS[(other, image)] for image in "012"]))
    # with every model of one task there is no other task: uniform
    alone = _context(MODELS[:2])
    assert torch.allclose(_maps(alone, MODELS[0], CONTROLS["other_task"]), torch.full((3, *SIZE), 1 / 8))


def test_other_image_paints_the_next_images_effects_on_this_images_classes() -> None:
    maps = _maps(_context(MODELS), MODELS[0], CONTROLS["other_image"])
    # image 0 gets image 1's effects (road 0.6 over its 4 road pixels, sky 0.2 over 3, no car: 0), image 1
    # image 2's, image 2 (the last) image 0's
    assert torch.allclose(maps[0], torch.tensor([[0.2 / 3] * 3 + [0.0], [0.15] * 4]))
    expected = _painted([EFFECTS[("s1", "1")], EFFECTS[("s1", "2")], EFFECTS[("s1", "0")]])
    assert torch.allclose(maps, expected)


def test_the_cause_mask_control_is_the_mask_or_uniform() -> None:
    maps = _maps(_context(MODELS), MODELS[2], CONTROLS["cause_mask"])
    assert torch.equal(maps[0], torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0] * 4]))
    assert torch.allclose(maps[1], torch.full(SIZE, 1 / 8))  # no mask: uniform
    assert torch.equal(maps[2], torch.from_numpy(LABELS[2] == ROAD).float())


def test_controls_are_resized_nearest_to_the_model_input() -> None:
    model = _model("s1", "steering", (4, 8))
    context = _context((model, *MODELS[1:]))
    maps = _maps(context, model, CONTROLS["oracle"])
    painted = _painted([EFFECTS[("s1", image)] for image in "012"])
    assert maps.shape == (3, 4, 8)
    assert torch.allclose(maps, painted.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))


class GreenMean(nn.Module):
    """Output = mean green intensity: erasing a class moves it by that class's share of the green."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 1].mean(dim=(1, 2))[:, None]


def test_the_oracle_reads_the_referees_own_effects() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(len(LABELS), *SIZE, 3), dtype=np.uint8)
    model = LoadedModel("green", GreenMean(), {}, "steering", SIZE)
    context = EvaluationContext(ArrayTruthSet(images, LABELS), range(len(LABELS)), [model], {}, {})
    maps = _maps(context, model, CONTROLS["oracle"])
    effects = cached_causal_effects(context)
    assert len(effects) == 7  # three classes in image 0, two in each other
    for row in effects.itertuples():
        where = torch.from_numpy(LABELS[int(row.image)] == row.class_id)
        assert float(maps[int(row.image)][where].sum()) == pytest.approx(row.abs_delta, rel=1e-5)


def test_controls_look_up_the_indices_of_the_ids() -> None:
    context = _context(MODELS)
    ids, images, labels, _ = next(context.batches())
    batch, label_tensor = context.model_input(MODELS[0], images), torch.from_numpy(np.stack(labels))
    for name in ("other_image", "cause_mask"):
        # a fresh context each time, so that nothing comes from the map cache
        fresh = _context(MODELS)
        assert torch.equal(
            fresh.maps(MODELS[0], CONTROLS[name], batch, label_tensor, ids),
            _maps(context, MODELS[0], CONTROLS[name]),
        )
