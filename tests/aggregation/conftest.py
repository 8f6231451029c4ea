"""Fixtures of the aggregation tests."""

from __future__ import annotations

import pandas as pd
import pytest
from aggregation_tables import make_per_image


@pytest.fixture
def two_methods() -> pd.DataFrame:
    """cnn/gradcam and cnn/shifted: the same scores but car raised by 0.2 under `shifted`."""
    base = make_per_image("cnn", "gradcam")
    shifted = make_per_image("cnn", "shifted", shift={26: 0.2})
    return pd.concat([base, shifted], ignore_index=True)
