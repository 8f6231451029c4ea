from __future__ import annotations

from pathlib import Path

import pytest

from gradsum.fileio import atomic_directory, atomic_write_text


def test_failed_block_leaves_no_folder(tmp_path: Path) -> None:
    target = tmp_path / "set"
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half.txt").write_text("x")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_successful_block_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "set"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("a")
    assert (target / "a.txt").read_text() == "a"


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "f.txt", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_replacement_killed_between_its_renames_is_recovered(tmp_path: Path) -> None:
    target = tmp_path / "results"
    # what a kill right after `os.replace(target, old)` leaves: the previous folder aside, nothing at target
    old = tmp_path / ".results.old"
    old.mkdir()
    (old / "profiles.csv").write_text("previous")
    with atomic_directory(target, overwrite=True) as staging:
        assert (target / "profiles.csv").read_text() == "previous"
        (staging / "profiles.csv").write_text("new")
    assert (target / "profiles.csv").read_text() == "new" and not old.exists()
