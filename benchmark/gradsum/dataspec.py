"""Declarative files → frozen dataclasses, refusing unknown, missing and mistyped fields by name.

Model specs, truth-set specs and run configs are YAML mappings: `load_yaml` is the one reader of them
(its errors are one line naming the file, and the line of a syntax error), `shipped` lists the files a
package ships by name, and `build` checks a mapping against a dataclass's type hints so that a typo
names the file and the dotted field at fault.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gradsum.errors import GradSUMError, SpecError
from gradsum.registry import Registry

T = TypeVar("T")


def load_yaml(path: str | Path, error: type[GradSUMError] = SpecError) -> dict[str, Any]:
    """The top-level mapping of a YAML file (UTF-8); any problem raises `error` in one line naming the file."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as problem:
        raise error(f"{source}: cannot read ({problem.strerror or problem})") from None
    except UnicodeDecodeError as problem:
        raise error(f"{source}: not valid YAML (not UTF-8 text: byte {problem.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as problem:
        raise error(f"{source}: not valid YAML ({_syntax_error(problem)})") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise error(f"{source}: the top level must be a mapping of fields, got {got}")
    return data


def _syntax_error(problem: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line and column, 1-based) and what, without the quoted source."""
    if not isinstance(problem, yaml.MarkedYAMLError) or problem.problem_mark is None:
        return " ".join(str(problem).split())
    mark = problem.problem_mark
    what = ": ".join(part for part in (problem.context, problem.problem) if part)
    return " ".join(f"line {mark.line + 1}, column {mark.column + 1}: {what}".split())


def shipped(folder: Path, kind: str) -> Registry[Path]:
    """The YAML files a package ships in `folder` (model specs, truth-set specs, run configs) by stem;
    `kind` names them in the error for an unknown name."""
    registry: Registry[Path] = Registry(kind)
    for path in sorted(folder.glob("*.yaml")):
        registry.add(path.stem, path)
    return registry


def build(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Instantiate dataclass `cls` from the mapping `data`; errors name `source` and the field."""
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "spec"
        raise SpecError(f"{source}: {where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"{source}: unknown field '{prefix}{unknown[0]}'; valid fields: {', '.join(fields)}")
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SpecError(f"{source}: missing field '{prefix}{name}'")
    values = {name: convert(hints[name], value, source, f"{prefix}{name}") for name, value in data.items()}
    return cls(**values)


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested mappings (lists compare as tuples)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            name
            for key in sorted(set(old) | set(new), key=str)
            for name in changed_fields(old.get(key), new.get(key), f"{prefix}{key}.")
        ]
    same = _frozen(old) == _frozen(new)
    return [] if same else [prefix.rstrip(".")]


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def convert(hint: Any, value: Any, source: str, name: str) -> Any:
    """Check one field's value against its type hint, converting lists to tuples and ints to floats."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build(hint, value, source, f"{name}.")
    origin = typing.get_origin(hint)
    wrong = SpecError(f"{source}: field '{name}' should be {_describe(hint)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None:
            if len(options) < len(typing.get_args(hint)):
                return None
            raise wrong
        if len(options) == 1:
            return convert(options[0], value, source, name)
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, source, f"{name}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise wrong
        return tuple(
            convert(a, v, source, f"{name}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        return dict(value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise wrong
        (item,) = typing.get_args(hint)
        return [convert(item, v, source, f"{name}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise wrong
    if isinstance(hint, type) and not isinstance(value, hint):
        raise wrong
    return value


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))
