from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import gradsum.models.specs as model_specs
import gradsum.pipeline.config as run_config
import gradsum.truthsets.spec as truthset_specs
from gradsum.dataspec import build, changed_fields, load_yaml, shipped
from gradsum.errors import SpecError, TruthSetError, UnknownNameError
from gradsum.registry import Registry


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


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: [x\n", "line 2, column 1: while parsing a flow sequence: expected ',' or ']'"),
        ("name: x\n  size: 2\n", "line 2, column 7: mapping values are not allowed here"),
        ("name: x\nsize: *big\n", "line 2, column 7: found undefined alias 'big'"),
        (
            "name: x\n\tsize: 2\n",
            "line 2, column 1: while scanning for the next token: found character '\\t'",
        ),
    ],
)
def test_a_syntax_error_is_one_line_naming_the_file_and_the_line(
    tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as caught:
        load_yaml(path)
    assert str(caught.value).startswith(f"{path}: not valid YAML ({where}")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "got"), [("- name\n- size\n", "a list"), ("", "an empty file"), ("just words\n", "a str")]
)
def test_a_top_level_that_is_not_a_mapping_names_the_file(tmp_path: Path, text: str, got: str) -> None:
    path = tmp_path / "list.yaml"
    path.write_text(text, encoding="utf-8")
    message = f"{path}: the top level must be a mapping of fields, got {got}"
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        load_yaml(path)


def test_unreadable_files_name_the_file_with_the_error_type_asked_for(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(TruthSetError, match=r"latin\.yaml: not valid YAML \(not UTF-8 text: byte 9\)$"):
        load_yaml(tmp_path / "latin.yaml", TruthSetError)
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read \(No such file or directory\)$"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "ok.yaml").write_text("name: café\nsize: [1, 2]\n", encoding="utf-8")
    assert load_yaml(tmp_path / "ok.yaml") == {"name": "café", "size": [1, 2]}


def test_every_loader_of_a_declarative_file_gives_the_same_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [x\n", encoding="utf-8")
    with pytest.raises(SpecError) as expected:
        load_yaml(path)
    loaders: list[Callable[[Path], Any]] = [
        model_specs.read_spec,
        truthset_specs.load_spec,
        run_config.load_config,
    ]
    for load in loaders:
        with pytest.raises(SpecError) as caught:
            load(path)
        assert str(caught.value) == str(expected.value)


def test_shipped_lists_a_folders_yaml_files_by_stem(tmp_path: Path) -> None:
    for name in ("b.yaml", "a.yaml", "notes.txt", "c.yml"):
        (tmp_path / name).write_text("x: 1\n")
    listed = shipped(tmp_path, "example spec")
    assert listed.items() == [("a", tmp_path / "a.yaml"), ("b", tmp_path / "b.yaml")]
    with pytest.raises(UnknownNameError, match=r"unknown example spec .c.; valid: a, b$"):
        listed.get("c")


@pytest.mark.parametrize(
    ("module", "listing", "folder"),
    [
        (model_specs, "builtin_specs", Path(model_specs.__file__).with_name("specs")),
        (truthset_specs, "builtin_specs", Path(truthset_specs.__file__).with_name("specs")),
        (run_config, "builtin_configs", Path(run_config.__file__).parents[1] / "configs"),
    ],
    ids=["model specs", "truth-set specs", "run configs"],
)
def test_each_kind_of_shipped_file_is_listed_through_shipped(
    monkeypatch: pytest.MonkeyPatch, module: Any, listing: str, folder: Path
) -> None:
    calls: list[Path] = []

    def spy(where: Path, kind: str) -> Registry[Path]:
        calls.append(where)
        return shipped(where, kind)

    monkeypatch.setattr(module, "shipped", spy)
    listed = getattr(module, listing)()
    assert calls == [folder]
    assert listed.names() == sorted(path.stem for path in folder.glob("*.yaml")) != []
