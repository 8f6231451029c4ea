"""`FinetuneSettings`: the one settings type of fine-tuning, read from a config, written to the card, read
from command-line text, and checked with messages that name the field."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import pytest

from gradsum.dataspec import build
from gradsum.errors import SpecError
from gradsum.finetune.loss import KEEP_TARGETS
from gradsum.finetune.relevance import RELEVANCE_MAPS
from gradsum.finetune.settings import TEXT_READERS, FinetuneSettings, LossWeights
from gradsum.models.checkpoints import ModelCard
from gradsum.taxonomy import FAMILIES, TASKS, check_covers_families, check_covers_tasks

CONFIG: dict[str, Any] = {
    "foreground": ["road", "car"],
    "weights": {"background": 1, "keep": 0},
    "samples": 4,
    "lr": 1e-3,
    "steps": 2,
    "batch_size": 2,
    "split": "val",
    "seed": 3,
}


def test_a_config_block_builds_typed_settings_and_round_trips_through_the_card_record() -> None:
    settings = build(FinetuneSettings, CONFIG, "<config>")
    assert settings == FinetuneSettings(
        ("road", "car"), LossWeights(background=1.0, keep=0.0), 4, 1e-3, 2, 2, "val", 3
    )
    assert settings.weights == LossWeights(1.0, 0.3, 0.8, 0.0)
    record = json.loads(json.dumps(settings.to_dict()))
    assert record == {
        "foreground": ["road", "car"],
        "weights": {"background": 1.0, "foreground": 0.3, "relevance": 0.8, "keep": 0.0},
        "samples": 4,
        "lr": 1e-3,
        "steps": 2,
        "batch_size": 2,
        "split": "val",
        "seed": 3,
    }
    assert record == json.loads(json.dumps(dataclasses.asdict(settings)))
    assert build(FinetuneSettings, record, "card.json") == settings


def test_the_defaults_are_robustvits_weights_and_the_documented_schedule() -> None:
    settings = build(FinetuneSettings, {"foreground": ["road"]}, "<config>")
    assert settings == FinetuneSettings(("road",))
    assert (settings.samples, settings.lr, settings.steps, settings.batch_size) == (50, 1e-5, 100, 8)
    assert (settings.split, settings.seed) == ("train", 0)
    assert dataclasses.astuple(settings.weights) == (2.0, 0.3, 0.8, 0.2)
    assert str(settings.weights) == "2,0.3,0.8,0.2"
    assert LossWeights.parse(str(settings.weights)) == settings.weights


def test_a_card_without_a_finetune_and_one_with_its_record_both_load() -> None:
    plain = ModelCard.from_dict({"spec": {"name": "vit"}, "task": "steering", "finetune": {}})
    assert plain.finetune == {}
    settings = FinetuneSettings(("road",), seed=2)
    record = {"base": "models/vit", **settings.to_dict(), "foreground_ids": [7], "scene_ids": ["a"]}
    card = ModelCard.from_dict({"spec": {"name": "vit"}, "task": "steering", "finetune": record})
    names = [f.name for f in dataclasses.fields(FinetuneSettings)]
    assert build(FinetuneSettings, {name: card.finetune[name] for name in names}, "card") == settings


def test_command_line_text_is_read_by_each_fields_type() -> None:
    texts = {"foreground": "road, sidewalk", "weights": "1,0.5,2,0", "samples": "3", "lr": "1e-3"}
    assert FinetuneSettings.from_text(texts) == FinetuneSettings(
        ("road", "sidewalk"), LossWeights(1.0, 0.5, 2.0, 0.0), samples=3, lr=1e-3
    )
    # every field's type has a reader, so a new field is readable from the command line or fails here
    assert set(typing.get_type_hints(FinetuneSettings).values()) <= set(TEXT_READERS)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ({"samples": "many"}, r"^samples: 'many' is not an integer$"),
        ({"lr": "fast"}, r"^lr: 'fast' is not a number$"),
        ({"weights": "2,0.3,0.8"}, r"^weights: '2,0\.3,0\.8' is not four non-negative numbers"),
        ({"weights": "1,2,3,nan"}, r"^weights: '1,2,3,nan' is not four non-negative numbers"),
    ],
)
def test_text_that_is_not_of_its_fields_type_names_the_field(texts: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        FinetuneSettings.from_text({"foreground": "road", **texts})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"foreground": ()}, r"^foreground: name at least one Cityscapes class"),
        (
            {"foreground": ("road", "roads")},
            r"^foreground: unknown Cityscapes class 'roads'; valid: .*sidewalk",
        ),
        ({"weights": LossWeights(keep=-1.0)}, r"^weights\.keep: must be a non-negative number, got -1\.0$"),
        ({"samples": 0}, r"^samples: must be 1 or more, got 0$"),
        ({"steps": 0}, r"^steps: must be 1 or more, got 0$"),
        ({"batch_size": -2}, r"^batch_size: must be 1 or more, got -2$"),
        ({"lr": 0.0}, r"^lr: must be a positive number, got 0\.0$"),
        ({"lr": float("inf")}, r"^lr: must be a positive number, got inf$"),
    ],
)
def test_a_bad_value_names_its_field(changes: dict[str, Any], message: str) -> None:
    settings = dataclasses.replace(FinetuneSettings(("road",)), **changes)
    with pytest.raises(SpecError, match=message):
        settings.check()
    with pytest.raises(SpecError, match=message.replace("^", r"^models\[t\]\.finetune\.")):
        settings.check(lambda name: f"models[t].finetune.{name}")


def test_the_settings_are_checked_quietly_when_good() -> None:
    FinetuneSettings(("road", "car"), LossWeights(0, 0, 0, 0), samples=1, steps=1, batch_size=1).check()


def test_every_family_has_a_relevance_map_and_every_task_a_keep_target() -> None:
    check_covers_families(RELEVANCE_MAPS, "RELEVANCE_MAPS")
    check_covers_tasks(KEEP_TARGETS, "KEEP_TARGETS")
    assert set(RELEVANCE_MAPS) == set(FAMILIES) and set(KEEP_TARGETS) == set(TASKS)
