"""`gradsum --help` stays light: building the parser loads none of the heavy libraries the commands use."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from gradsum.cli import commands as commands_package
from gradsum.cli import main

HEAVY = ("torch", "timm", "pandas", "matplotlib", "scipy")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, where nothing has been imported yet."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _command_names() -> list[str]:
    modules = pkgutil.iter_modules(commands_package.__path__)
    return sorted(importlib.import_module(f"gradsum.cli.commands.{m.name}").COMMAND.name for m in modules)


def test_build_parser_imports_no_heavy_library() -> None:
    code = (
        "import sys; from gradsum.cli import build_parser; build_parser(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_import_gradsum_is_light() -> None:
    done = _python(f"import sys, gradsum; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_command_help_imports_no_heavy_library() -> None:
    # one interpreter for all commands: `gradsum <command> --help` of each, then what got imported
    code = (
        "import contextlib, io, json, sys\n"
        "from gradsum.cli import main\n"
        f"for name in {_command_names()!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_help_lists_every_discovered_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gradsum", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    listed = {
        line.split()[0] for line in done.stdout.splitlines() if line.startswith("    ") and line.split()
    }
    assert set(_command_names()) <= listed


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_family_is_one_line_naming_the_argument_and_valid_values(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gradsum.attribution.base import FAMILIES

    assert main(["methods", "--family", "transformer"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gradsum methods: error:")
    assert "--family" in line and "'transformer'" in line
    assert line.endswith(f"valid: {', '.join(sorted(FAMILIES))}")


def test_bad_task_is_refused_before_any_work(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from gradsum.models import TRAINING_TASKS

    # neither the spec file nor the truth set exists: the task name is checked first
    argv = ["train", "--model", str(tmp_path / "no-spec.yaml"), "--truthset", str(tmp_path / "none")]
    assert main([*argv, "--task", "steer"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("gradsum train: error:")
    assert "--task" in line and "'steer'" in line
    assert line.endswith(f"valid: {', '.join(TRAINING_TASKS.names())}")
    assert not (tmp_path / "none").exists()
