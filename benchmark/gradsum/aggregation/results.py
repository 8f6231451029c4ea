"""Reading and writing the aggregation tables of a results folder (per_image, profiles, comparisons)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS
from gradsum.errors import ResultsError
from gradsum.fileio import atomic_write_bytes, atomic_write_text
from gradsum.names import qualified

PER_IMAGE_FILE = "per_image.parquet"
#: Where per_image rows go when parquet cannot be written (no pyarrow).
PER_IMAGE_CSV = "per_image.csv"
PROFILES_FILE = "profiles.csv"
COMPARISONS_FILE = "comparisons.csv"


def write_per_image(frame: pd.DataFrame, folder: str | os.PathLike[str]) -> Path:
    """Atomically write `per_image.parquet` into `folder`."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return atomic_write_bytes(Path(folder) / PER_IMAGE_FILE, buffer.getvalue())


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Atomically write a table as CSV without the index."""
    return atomic_write_text(path, frame.to_csv(index=False))


def read_per_image(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """The per_image table of a results folder (parquet, or the CSV fallback), with its columns checked."""
    root = Path(folder)
    path = root / PER_IMAGE_FILE
    if not path.is_file() and (root / PER_IMAGE_CSV).is_file():
        path = root / PER_IMAGE_CSV
    if not path.is_file():
        raise ResultsError(f"{root / PER_IMAGE_FILE}: missing (is {root} a results folder?)")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as error:  # pyarrow and pandas raise many types on damaged files
        raise ResultsError(f"{path}: cannot be read ({type(error).__name__}: {error})") from error
    missing = [c for c in PER_IMAGE_COLUMNS if c not in frame.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame.assign(image=frame["image"].astype(str))


def read_runs(folders: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """The per_image tables of several runs; with more than one, every model reads `run:model`.

    Every side carries its run, not only the names that collide, so a label says which folder (and
    truth set) a profile came from whatever the other folders hold.
    """
    roots = [Path(f) for f in folders]
    names = [root.resolve().name for root in roots]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ResultsError(f"results folders share the name(s) {', '.join(duplicated)}; rename one")
    frames = [read_per_image(root) for root in roots]
    if len(frames) == 1:
        return frames[0]
    renamed = [
        frame.assign(model=[qualified(run, model) for model in frame["model"].astype(str)])
        for run, frame in zip(names, frames, strict=True)
    ]
    return pd.concat(renamed, ignore_index=True)
