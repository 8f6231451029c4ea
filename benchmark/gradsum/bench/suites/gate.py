"""Gate cost: the comparison of a candidate with the default run's tables, at 1000 image resamples.

The issue's bar: the comparison takes well under a second, so a gate's time is dominated by profiling the
candidate. The baseline is a results folder given by the environment (GRADSUM_BENCH_GATE_RESULTS), else
the default run's folder when it exists, else tables synthesised at the default run's size (1000 images ×
19 classes × 10 model × method pairs, seeded); the JSON says which. The candidate is the baseline with
seeded per-image noise on every figure (the comparison's cost does not depend on the values, and noise
keeps every interval from collapsing to a point). Reading the folders is timed apart from the comparison.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradsum.aggregation.profiles import PROFILE_STATISTICS
from gradsum.bench import BenchSuite, timeit
from gradsum.contract import MANIFEST, PER_IMAGE, RECOMMENDATIONS, TRUST
from gradsum.gate import GateInputs, gate, policy_from_dict, read_results
from gradsum.pipeline.config import builtin_configs, load_config
from gradsum.truthsets.labels import CITYSCAPES

#: a results folder to gate against; unset: the default run's folder, else synthesised tables
RESULTS_ENV = "GRADSUM_BENCH_GATE_RESULTS"
#: the issue's resample count, and the bar the comparison must stay well under
RESAMPLES = 1000
TARGET_SECONDS = 1.0
#: the synthesised tables: the default run's size (its test split, 19 evaluated classes, 10 pairs)
IMAGES, PAIRS = (
    1000,
    (("pilotnet", 2), ("vit", 2), ("hybrid_vit", 3), ("compact_cnn", 1), ("vit_obstacle", 2)),
)
#: every check, as the plan's example policy has them
POLICY: dict[str, Any] = {
    "resamples": RESAMPLES,
    "checks": [
        {"check": "class_shift", "statistic": "mass_share", "tolerance": 0.05},
        {"check": "class_shift", "classes": ["road", "car"], "statistic": "score", "tolerance": 0.03},
        {"check": "spearman", "floor": 0.8},
        {"check": "top_k", "k": 3, "keep_in": ["road"], "keep_out": ["sky"]},
        {"check": "verdict"},
        {"check": "task_metric", "tolerance": 0.02},
    ],
}
SEED = 0


def default_results() -> Path:
    """Where the default run writes its results folder."""
    config = load_config(builtin_configs().get("default"))
    return Path(config.results_dir) / config.name


def baseline_inputs(given: str | None, default: Path, quick: bool) -> tuple[GateInputs, str]:
    """The baseline's tables and where they came from: `given`, else `default` when it holds a run, else
    synthesised."""
    if given:
        return read_results(given), f"results folder {given} ({RESULTS_ENV})"
    if (default / MANIFEST).is_file():
        return read_results(default), f"the default run's results folder {default}"
    images = IMAGES // 5 if quick else IMAGES
    return synthetic_inputs(images), (
        f"synthesised: {images} images × 19 classes × 10 model/method pairs, seed {SEED}; no run at {default}"
    )


def synthetic_inputs(images: int) -> GateInputs:
    """Tables of the default run's shape with seeded values: every image holds each of the 19 evaluated
    classes with probability 0.7, and every pair passes its trust checks."""
    rng = np.random.default_rng(SEED)
    classes = [c for c in CITYSCAPES.classes if not c.ignore]
    frames, trust, recommended, cards = [], [], [], {}
    for model, methods in PAIRS:
        for index in range(methods):
            method = f"method{index}"
            present = rng.random((images, len(classes))) < 0.7
            image, column = np.nonzero(present)
            frame = pd.DataFrame(
                {
                    "model": model,
                    "method": method,
                    "image": [f"{i:05d}" for i in image],
                    "class_id": [classes[c].id for c in column],
                    "class": [classes[c].name for c in column],
                    "pixels": 100,
                    "area_share": 1.0 / len(classes),
                },
            )
            for statistic in PROFILE_STATISTICS:
                frame[statistic] = rng.random(len(frame))
            frames.append(frame)
            trust.append(
                {"model": model, "method": method, "role": "method", "null": False, "verdict": "pass"}
            )
        recommended.append({"model": model, "method": "method0", "passed": 1, "sentence": ""})
        cards[model] = {"task": "steering", "metrics": {"r2": 0.9, "mae": 0.05, "rmse": 0.07}}
    return GateInputs(
        folder=Path("synthetic"),
        manifest={"truthset": {"kind": "synthetic", "split": "test", "parameters": {"seed": SEED}}},
        per_image=pd.concat(frames, ignore_index=True)[list(PER_IMAGE.names)],
        trust=pd.DataFrame(trust).reindex(columns=list(TRUST.names), fill_value=""),
        recommendations=pd.DataFrame(recommended, columns=list(RECOMMENDATIONS.names)),
        cards=cards,
    )


def noisy(inputs: GateInputs) -> GateInputs:
    """`inputs` with seeded noise (sd 0.02) on every per-image figure: the candidate."""
    rng = np.random.default_rng(SEED + 1)
    frame = inputs.per_image.copy()
    for statistic in PROFILE_STATISTICS:
        frame[statistic] = frame[statistic] + rng.normal(0.0, 0.02, len(frame))
    return dataclasses.replace(inputs, folder=Path(f"{inputs.folder} + noise"), per_image=frame)


def run(quick: bool, device: str) -> dict[str, Any]:
    """Time `gate` of a noisy copy of the baseline's tables against them under the example policy."""
    repeats = 2 if quick else 5
    given = os.environ.get(RESULTS_ENV)
    default = default_results()
    read_seconds = None
    if given or (default / MANIFEST).is_file():
        read_seconds = timeit(lambda: read_results(given or default), repeats=repeats)
    base, source = baseline_inputs(given, default, quick)
    cand = noisy(base)
    policy = policy_from_dict(POLICY, "the gate suite's policy")
    report = gate(base, cand, policy)
    seconds = timeit(lambda: gate(base, cand, policy), repeats=repeats)
    per_image = base.per_image
    return {
        "baseline": source,
        "candidate": "the baseline's tables with per-image noise (sd 0.02, seeded)",
        "images": int(per_image["image"].nunique()),
        "classes": int(per_image["class_id"].nunique()),
        "pairs": int(per_image.groupby(["model", "method"]).ngroups),
        "rows": len(per_image),
        "resamples": RESAMPLES,
        "checks": [entry["check"] for entry in POLICY["checks"]],
        "outcomes": len(report.outcomes),
        "timing": f"min over {repeats} repeats after one warm-up",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "read_seconds": None if read_seconds is None else round(read_seconds, 4),
        "gate_seconds": round(seconds, 4),
        "target_seconds": TARGET_SECONDS,
        "meets_target": seconds < TARGET_SECONDS,
    }


SUITE = BenchSuite(
    "gate",
    "gradsum gate's comparison on the default run's tables (1000 resamples), apart from reading them",
    run,
)
