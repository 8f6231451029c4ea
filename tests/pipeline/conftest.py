"""A small workspace for the pipeline's scale and fault tests: a synthetic set and a trained PilotNet."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from scale_workspace import Workspace

from gradsum.pipeline import config_from_dict, run


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """40 test scenes in shards of 4 images; PilotNet (one epoch) with GradCAM and integrated gradients.

    The reference results come from one uninterrupted run in this process.
    """
    root = tmp_path_factory.mktemp("scale")
    data: dict[str, Any] = {
        "name": "scale",
        "truthset": {
            "path": str(root / "synth"),
            "split": "test",
            "generate": {"count": 400, "seed": 5, "size": [96, 192]},
        },
        "models": [{"name": "pilotnet", "spec": "pilotnet", "overrides": {"train": {"epochs": 1}}}],
        "methods": [{"method": "gradcam"}, {"method": "integrated_gradients"}],
        "evaluation": {"checks": []},
        "batch_size": 2,
        "shard_size": 4,
        "workers": 0,
        "bootstrap_resamples": 50,
        "overlays": 1,
        "models_dir": str(root / "models"),
        "results_dir": str(root / "results"),
    }
    config_file = root / "scale.yaml"
    config_file.write_text(yaml.safe_dump(data))
    reference = run(config_from_dict(data), out=root / "reference")
    return Workspace(root, data, config_file, reference)
