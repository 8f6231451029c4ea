"""Shared fixtures: everything generated, nothing downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    # CI has two cores and runs two xdist workers. Session-wide, so that module fixtures (which run before
    # function fixtures) compute with the same thread count as the tests that compare against them: float
    # reductions split over another number of threads differ in the last digits.
    torch.set_num_threads(1)
