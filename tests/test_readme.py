"""The README's Python example runs as written, on a tiny synthetic set and an untrained PilotNet."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gradsum import report
from gradsum.models import load_spec, save_model
from gradsum.truthsets.synthetic import generate

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    """The README's first ```python block."""
    match = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match is not None, "README.md has no ```python example"
    return match.group(1)


def test_readme_example_runs_and_its_masses_are_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    generate(tmp_path / "datasets" / "synthetic", count=80, seed=0)
    spec = load_spec("pilotnet")
    torch.manual_seed(0)
    save_model(spec.build(), spec, tmp_path / "models" / "pilotnet")
    # a finished results folder costs a whole run: the example's last lines read a stand-in
    recommendations = pd.DataFrame({"model": ["pilotnet"], "method": ["gradcam"]})
    monkeypatch.setattr(report, "load_results", lambda path: SimpleNamespace(recommendations=recommendations))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(python_example(), str(README), "exec"), namespace)
    scores, table = namespace["scores"], namespace["table"]
    # each image's class masses are shares of its whole map: they sum to 1 over the classes present
    masses = torch.nan_to_num(scores.mass_share).sum(dim=1).numpy()
    np.testing.assert_allclose(masses, np.ones(8), atol=1e-5)
    assert set(table["model"]) == {"pilotnet"} and set(table["method"]) == {"gradcam"}
    assert (table["n_images"] <= 8).all() and "pilotnet" in capsys.readouterr().out
