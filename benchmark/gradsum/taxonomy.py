"""The one home of task and family names, and of each task's default attribution target.

Every per-task registry (training losses, attribution targets, perturbation measures, ...)
and every per-family registry (randomisation depth, granularity layers, CAM layers, ...)
is keyed by these names, and `tests/test_taxonomy.py` checks that each covers them all: a new
task or family is added here first, and the test then lists every registry it must reach.

This module sits below every stage (it imports only the standard library, `gradsum.errors` and
`gradsum.registry`), so truth sets, models and attribution can all import it. Per-task and per-family
registries are made with `TaskRegistry` and `FamilyRegistry`, which refuse a name off their axis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final, Literal, TypeVar, get_args

from gradsum.errors import GradSUMError
from gradsum.registry import Registry

T = TypeVar("T")

Family = Literal["cnn", "vit", "hybrid"]

TASKS: Final = ("steering", "obstacle")
"""What a model predicts: a steering angle (regression) or an obstacle in the ego lane (binary)."""

FAMILIES: Final[tuple[Family, ...]] = get_args(Family)
"""Architecture families: attribution methods and layer rules are chosen per family."""

DEFAULT_TARGETS: Final[Mapping[str, str]] = MappingProxyType(
    {"steering": "direction", "obstacle": "positive"}
)
"""The attribution target when none is named, for the Python API and `gradsum run` alike.

Steering explains the output in the direction the model steers; obstacle models explain the
positive logit: what makes the model see an obstacle, the same question whatever it predicted.
"""


class CoverageError(GradSUMError):
    """A per-task or per-family registry misses some task or family (a programming error)."""


def missing(registry: Iterable[str], names: Iterable[str]) -> list[str]:
    """The `names` that `registry` (a Registry, mapping or set of names) has no entry for."""
    have = set(registry)
    return [name for name in names if name not in have]


def check_covers(registry: Iterable[str], names: Iterable[str], what: str) -> None:
    """Raise `CoverageError` naming `what` (the registry) and each name it misses."""
    absent = missing(registry, names)
    if absent:
        raise CoverageError(f"{what} has no entry for {', '.join(absent)}")


def check_covers_tasks(registry: Iterable[str], what: str) -> None:
    """Raise unless `registry` has an entry for every task in `TASKS`."""
    check_covers(registry, TASKS, what)


def check_covers_families(registry: Iterable[str], what: str) -> None:
    """Raise unless `registry` has an entry for every family in `FAMILIES`."""
    check_covers(registry, FAMILIES, what)


class KeyedRegistry(Registry[T]):
    """A registry whose names must come from a fixed axis (the tasks or the families)."""

    def __init__(self, kind: str, axis: tuple[str, ...]) -> None:
        super().__init__(kind)
        self.axis = axis

    def register(self, name: str) -> Callable[[T], T]:
        """As `Registry.register`; a name off the axis is a programming error, raised at import."""
        if name not in self.axis:
            raise CoverageError(f"{self.kind} {name!r} is not one of {', '.join(self.axis)}")
        return super().register(name)


class TaskRegistry(KeyedRegistry[T]):
    """A registry with one entry per task."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind, TASKS)


class FamilyRegistry(KeyedRegistry[T]):
    """A registry with one entry per model family."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind, FAMILIES)
