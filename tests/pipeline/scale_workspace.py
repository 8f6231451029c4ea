"""The scale and fault tests' workspace (built by the `workspace` fixture in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradsum.pipeline import RunConfig, config_from_dict


@dataclass(frozen=True)
class Workspace:
    """A config (as a dict and as a YAML file) whose truth set and model exist, and its results."""

    root: Path
    data: dict[str, Any]
    config_file: Path
    reference: Path

    def config(self, **changes: Any) -> RunConfig:
        """The workspace's config with top-level fields changed."""
        return config_from_dict({**self.data, **changes}, "workspace")
