"""Results-folder fixtures for the report tests (builders live in `report_fixtures`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import write_results


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A fresh tiny results folder with three models, seven model × method runs and every table."""
    return write_results(tmp_path / "results" / "run-1")


@pytest.fixture
def small_results_dir(tmp_path: Path) -> Path:
    """A fresh results folder with one model and one method: the cheapest to render."""
    return write_results(tmp_path / "results" / "small", models={"pilotnet": ("pilotnet", ("gradcam",))})
