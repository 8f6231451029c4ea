"""Every per-task and per-family registry covers every task and every family of `gradsum.taxonomy`."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from gradsum.attribution import METHODS
from gradsum.attribution.base import FAMILIES as METHOD_FAMILIES
from gradsum.attribution.layers import DEFAULTS as DEFAULT_LAYERS
from gradsum.attribution.layers import VIEWS
from gradsum.attribution.targets import TARGETS, resolve_target
from gradsum.evaluation.checks.breakdown import TARGET_GROUPS
from gradsum.evaluation.checks.granularity import LAYERS as GRANULARITY_LAYERS
from gradsum.evaluation.checks.perturbation import TASK_MEASURES
from gradsum.evaluation.materiality import MATERIALITY
from gradsum.evaluation.randomise import BLOCK_RULES
from gradsum.evaluation.referee import DECISION_FLIPS
from gradsum.finetune.loss import KEEP_TARGETS
from gradsum.finetune.relevance import RELEVANCE_MAPS
from gradsum.models.architectures import ARCHITECTURES
from gradsum.models.introspect import CAM_LAYERS
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.pipeline.config import default_config
from gradsum.taxonomy import (
    DEFAULT_TARGETS,
    FAMILIES,
    TASKS,
    CoverageError,
    FamilyRegistry,
    TaskRegistry,
    check_covers_families,
    check_covers_tasks,
)
from gradsum.truthsets.readers.synthetic import CAUSE_MASKS, PLAUSIBILITY_MASKS
from gradsum.truthsets.synthetic.scene import CAUSES

#: every registry with one entry per task, by the name a failure reports
PER_TASK: dict[str, Iterable[str]] = {
    "models.tasks.TRAINING_TASKS": TRAINING_TASKS,
    "attribution.targets.TARGETS": TARGETS,
    "taxonomy.DEFAULT_TARGETS": DEFAULT_TARGETS,
    "evaluation.perturbation.TASK_MEASURES": TASK_MEASURES,
    "evaluation.causal.DECISION_FLIPS": DECISION_FLIPS,
    "evaluation.breakdown.TARGET_GROUPS": TARGET_GROUPS,
    "evaluation.materiality.MATERIALITY": MATERIALITY,
    "finetune.loss.KEEP_TARGETS": KEEP_TARGETS,
    "truthsets.synthetic.scene.CAUSES": CAUSES,
    "truthsets.readers.synthetic.CAUSE_MASKS": CAUSE_MASKS,
    "truthsets.readers.synthetic.PLAUSIBILITY_MASKS": PLAUSIBILITY_MASKS,
}

#: every registry with one entry per model family
PER_FAMILY: dict[str, Iterable[str]] = {
    "attribution.base.FAMILIES": METHOD_FAMILIES,
    "attribution.layers.DEFAULTS": DEFAULT_LAYERS,
    "evaluation.randomise.BLOCK_RULES": BLOCK_RULES,
    "evaluation.granularity.LAYERS": GRANULARITY_LAYERS,
    "finetune.relevance.RELEVANCE_MAPS": RELEVANCE_MAPS,
    "models.introspect.CAM_LAYERS": CAM_LAYERS,
    "models.architectures.ARCHITECTURES (families)": {a.family for _, a in ARCHITECTURES.items()},
}


@pytest.mark.parametrize("name", sorted(PER_TASK))
def test_per_task_registry_covers_every_task(name: str) -> None:
    check_covers_tasks(PER_TASK[name], name)
    assert set(PER_TASK[name]) == set(TASKS)  # and holds nothing else


@pytest.mark.parametrize("name", sorted(PER_FAMILY))
def test_per_family_registry_covers_every_family(name: str) -> None:
    check_covers_families(PER_FAMILY[name], name)
    assert set(PER_FAMILY[name]) == set(FAMILIES)


def test_family_subsets_name_only_families() -> None:
    # methods and layer views apply to some families: a misspelt family would silently match no model
    for name, method in METHODS.items():
        assert set(method.applies_to) <= set(FAMILIES), name
        assert set(method.default_layer) <= set(FAMILIES), name
    for view, (families, _) in VIEWS.items():
        assert families <= set(FAMILIES), view


def test_default_targets_are_registered_targets() -> None:
    for task, target in DEFAULT_TARGETS.items():
        assert target in TARGETS[task]


def test_coverage_check_names_the_registry_and_what_it_misses() -> None:
    with pytest.raises(CoverageError, match=r"^evaluation\.LOSSES has no entry for obstacle$"):
        check_covers_tasks({"steering": 1.0}, "evaluation.LOSSES")
    with pytest.raises(CoverageError, match=r"^rules has no entry for vit, hybrid$"):
        check_covers_families(["cnn"], "rules")


def test_keyed_registries_refuse_a_name_off_their_axis() -> None:
    with pytest.raises(CoverageError, match=r"'swin' is not one of cnn, vit, hybrid"):
        FamilyRegistry[int]("layer rule").add("swin", 1)
    with pytest.raises(CoverageError, match=r"'depth' is not one of steering, obstacle"):
        TaskRegistry[int]("loss").add("depth", 1)


def test_python_api_and_default_run_explain_the_same_obstacle_target() -> None:
    # a Python user names no target; a `gradsum run` user runs the default config
    api = resolve_target(None, "obstacle").name
    run = resolve_target(default_config().targets["obstacle"], "obstacle").name
    assert api == run == "positive"
    assert resolve_target(None, "steering").name == default_config().targets["steering"] == "direction"
