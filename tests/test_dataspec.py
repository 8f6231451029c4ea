from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gradsum.dataspec import build, changed_fields
from gradsum.errors import SpecError


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5


@dataclass(frozen=True)
class Outer:
    name: str
    size: tuple[int, int] = (1, 2)
    names: tuple[str, ...] | None = None
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)


def test_converts_lists_ints_and_nested_mappings() -> None:
    built = build(Outer, {"name": "a", "size": [3, 4], "names": ["x"], "inner": {"rate": 1}}, "f.yaml")
    assert built == Outer("a", (3, 4), ("x",), None, Inner(1.0))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "a", "sizes": [1, 2]}, r"f\.yaml: unknown field 'sizes'; valid fields: name, size"),
        ({}, r"f\.yaml: missing field 'name'"),
        ({"name": "a", "size": [1]}, r"field 'size' should be"),
        ({"name": "a", "size": [1, True]}, r"field 'size\[1\]' should be int"),
        ({"name": "a", "limit": "all"}, r"field 'limit' should be int"),
        ({"name": "a", "inner": {"rate": "fast"}}, r"field 'inner\.rate' should be float"),
        ({"name": "a", "inner": {"rat": 1}}, r"unknown field 'inner\.rat'"),
        ({"name": "a", "inner": 3}, r"inner must be a mapping"),
    ],
)
def test_bad_fields_name_the_file_and_the_dotted_field(data: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build(Outer, data, "f.yaml")


def test_changed_fields_names_each_difference_by_its_dotted_path() -> None:
    old = {"name": "a", "arch": {"depth": 4, "sizes": [96, 192]}, "train": {"epochs": 10}}
    new = {"name": "a", "arch": {"depth": 4, "sizes": (96, 192), "pool": "max"}, "train": {"epochs": 5}}
    assert changed_fields(old, new) == ["arch.pool", "train.epochs"]
    assert changed_fields(old, old) == []
    assert changed_fields({"a": {"b": 1}}, {"a": 2}) == ["a"]
