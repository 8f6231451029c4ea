"""The stage floors of docs/design.md hold: no GradSUM module imports a stage above its own, and no two
modules import each other, directly or around a longer circle (imports inside functions count too)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import gradsum

PACKAGE = Path(gradsum.__file__).parent

#: each stage's floor, bottom first (docs/design.md, "Floors"); a module may import its own floor or lower
FLOORS = {
    **dict.fromkeys(
        ("errors", "registry", "fileio", "dataspec", "progress", "utils", "taxonomy", "contract", "names"), 0
    ),
    "plugins": 0,
    "truthsets": 1,
    "models": 2,
    "aggregation": 2,
    "attribution": 3,
    "labelling": 3,
    "finetune": 4,
    "evaluation": 4,
    "report": 5,
    "gate": 5,
    "pipeline": 6,
    "testing": 6,
    "bench": 7,
    "leaderboard": 7,
    "cli": 8,
    "__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> Iterator[str]:
    """Every gradsum module `path` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("gradsum"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    yield candidate if candidate in MODULES else node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("gradsum"))


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: {m for m in imported(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def stage(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_stage_has_a_floor() -> None:
    stages = {stage(m) for m in MODULES} - {""}
    assert stages <= set(FLOORS), f"stages without a floor: {sorted(stages - set(FLOORS))}"


def test_no_import_runs_up_a_floor() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if stage(module) and stage(target) and FLOORS[stage(target)] > FLOORS[stage(module)]
    ]
    assert upward == []


def test_stages_on_one_floor_do_not_import_each_other() -> None:
    across = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if stage(module) != stage(target)
        and FLOORS.get(stage(module)) == FLOORS.get(stage(target))
        and FLOORS.get(stage(module), 0) > 0
    ]
    assert across == []


def test_no_circle_of_imports() -> None:
    # package faces (`__init__`) re-export their submodules, so a submodule importing its own package's
    # face is not a circle of the design: leave out edges from a module to a package that contains it
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in GRAPH.items()}
    seen: dict[str, int] = {}
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(graph):
        if start not in seen:
            visit(start, [start])
    assert circles == []
