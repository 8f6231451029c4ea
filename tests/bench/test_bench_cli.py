from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradsum.bench import discover_suites
from gradsum.cli import main


def test_suites_are_discovered_every_time() -> None:
    first, second = discover_suites().names(), discover_suites().names()
    assert first == second
    assert {"aggregation", "attribution", "generate", "train"} <= set(first)


def test_bench_lists_suites_and_rejects_an_unknown_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "--list"]) == 0
    assert "attribution" in capsys.readouterr().out
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "attributoin", "--out", str(out)]) == 2
    assert "did you mean attribution" in capsys.readouterr().err
    assert not out.exists()


def test_bench_writes_json_with_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADSUM_BENCH_TRUTHSET", str(tmp_path / "missing"))
    out = tmp_path / "bench.json"
    assert main(["bench", "--suite", "train", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["machine"]["torch"] and "train" in figures["suites"]
