"""Shared fixtures: everything generated, nothing downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    # CI has two cores and runs two xdist workers.
    torch.set_num_threads(1)
