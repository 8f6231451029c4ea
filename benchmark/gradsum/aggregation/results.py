"""Reading the per_image tables of several results folders as one (`gradsum compare` across runs)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gradsum.contract import PER_IMAGE, read_table
from gradsum.errors import ResultsError
from gradsum.names import qualified


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
    frames = [read_table(root, PER_IMAGE) for root in roots]
    if len(frames) == 1:
        return frames[0]
    renamed = [
        frame.assign(model=[qualified(run, model) for model in frame["model"].astype(str)])
        for run, frame in zip(names, frames, strict=True)
    ]
    return pd.concat(renamed, ignore_index=True)
