"""`gradsum report RESULTS`: exit 0 and the report path on a good folder; one clear line otherwise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gradsum.cli import main


def test_good_folder_prints_the_report_path(
    small_results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(small_results_dir)]) == 0
    report = small_results_dir / "report.html"
    assert capsys.readouterr().out.strip() == str(report)
    assert "pilotnet · gradcam" in report.read_text()
    assert "Only one model × method ran" in report.read_text()


def _corrupt_profiles(folder: Path) -> None:
    pd.read_csv(folder / "profiles.csv").drop(columns="n_images").to_csv(folder / "profiles.csv", index=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "manifest.json").unlink(), "manifest.json: missing"),
        (
            lambda f: (f / "per_image.parquet").unlink(),
            "per_image.parquet: listed in manifest.json but missing",
        ),
        (_corrupt_profiles, "profiles.csv: sha256 differs from manifest.json"),
    ],
)
def test_damaged_folder_fails_cleanly_and_keeps_the_old_report(
    small_results_dir: Path, capsys: pytest.CaptureFixture[str], damage, message: str
) -> None:
    old = "<html>an earlier good report</html>"
    (small_results_dir / "report.html").write_text(old)
    damage(small_results_dir)
    assert main(["report", str(small_results_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradsum report: error: ") and message in err and "\n" not in err
    assert (small_results_dir / "report.html").read_text() == old
    assert not (small_results_dir / "plots").exists()
    assert not list(small_results_dir.glob(".*tmp"))


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such results folder" in capsys.readouterr().err
