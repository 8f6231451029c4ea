"""notebooks/profiles.ipynb runs top to bottom against a small results folder and writes its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from report_fixtures import MODELS, write_results

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "profiles.ipynb"


def test_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two models under one method: enough for one comparison, few figures to draw.
    models = {"pilotnet": MODELS["pilotnet"], "vit": ("vit", ("gradcam",))}
    folder = write_results(tmp_path / "results" / "run", models=models)
    monkeypatch.setenv("GRADSUM_RESULTS", str(folder))
    monkeypatch.setenv("GRADSUM_FIGURES", str(tmp_path / "figures"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    # "python3" is ipykernel's own spec; jupyter_client starts it with this interpreter.
    NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert (
        "profile_pilotnet_gradcam.svg" in written and "paired_pilotnet_gradcam_vs_vit_gradcam.png" in written
    )
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
