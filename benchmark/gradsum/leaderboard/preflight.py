"""Before a leaderboard trains anything: every scored method runs once on every protocol model it applies to.

A seed's run trains a dozen models before its first attribution, so a method that cannot run on one of
them (a layer it cannot read, an option it refuses) would surface only after the trainings. `preflight`
builds each protocol model untrained from its spec and attributes two random images with every method
that applies to it, as the run will (the run's target, the method's default layer), and names every
method × model that fails, in one error, in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from gradsum.attribution import METHODS, attribute
from gradsum.errors import GradSUMError, SpecError
from gradsum.leaderboard.protocol import Protocol
from gradsum.models import build_model, model_family
from gradsum.pipeline.config import ModelConfig
from gradsum.pipeline.inputs import configured_spec

log = logging.getLogger(__name__)

#: Images each method attributes per model: two, so a per-sample target and a batch both occur.
PREFLIGHT_IMAGES = 2


def preflight(protocol: Protocol, methods: Sequence[Mapping[str, Any]], device: str = "cpu") -> None:
    """Attribute `PREFLIGHT_IMAGES` random images with each `methods:` entry on each untrained protocol model
    it applies to; raise `SpecError` naming every method × model that fails, and why."""
    failures = []
    generator = torch.Generator().manual_seed(protocol.seed)
    for model in protocol.models:
        spec = configured_spec(ModelConfig(model.name, spec=model.spec, overrides=model.overrides))
        assert spec is not None  # a protocol model always names a spec (load_protocol checks it)
        module = build_model(spec.architecture, spec.img_size, **spec.arch).eval().to(device)
        images = torch.rand(PREFLIGHT_IMAGES, 3, *spec.img_size, generator=generator).to(device)
        family = model_family(module)
        for entry in methods:
            name = str(entry["method"])
            if family not in METHODS.get(name, "methods").applies_to:
                continue
            try:
                attribute(
                    module,
                    images,
                    name,
                    target=protocol.targets[model.task],
                    task=model.task,
                    layer=entry.get("layer"),
                    **dict(entry.get("options", {})),
                )
            except GradSUMError as error:
                failures.append(f"{name} on {model.name} ({family}): {error}")
    if failures:
        raise SpecError(
            f"protocol {protocol.name}: {len(failures)} method × model pair(s) cannot run, found before any "
            "training: " + "; ".join(failures)
        )
    log.info("leaderboard: every method ran on every protocol model it applies to (untrained, preflight)")
