"""A tiny, schema-correct results folder built from seeded random numbers (no pipeline needed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from gradsum.aggregation import COMPARISON_COLUMNS, PER_IMAGE_COLUMNS
from gradsum.contract import ATTENTION, ATTENTION_PROFILES, GROUND_TRUTH, TableSchema, write_table
from gradsum.evaluation.base import CHANCE, CONFOUND, CONTROL, HEURISTIC, METHOD, CheckResult, Criterion
from gradsum.evaluation.verdicts import recommend, trust_table
from gradsum.fileio import sha256_file
from gradsum.truthsets.labels import CITYSCAPES

CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car")
#: model → (architecture, methods), named as the default run config names them (split parts as "split/<part>").
MODELS = {
    "pilotnet": ("pilotnet", ("gradcam",)),
    "vit": ("vit", ("gradcam", "gradrollout")),
    "hybrid": ("hybrid_vit", ("gradcam", "gradcam_tokenizer", "gradrollout", "split", "split/attention")),
}
IMAGES = ("0001", "0002", "0003", "0004")


Models = dict[str, tuple[str, tuple[str, ...]]]


def per_image_table(rng: np.random.Generator, models: Models) -> pd.DataFrame:
    """One row per model × method × image × class; "car" is absent from image 0004 (no row)."""
    rows = []
    for model, (_, methods) in models.items():
        for method in methods:
            for image in IMAGES:
                present = [c for c in CLASSES if not (c == "car" and image == "0004")]
                pixels = rng.integers(50, 500, len(present))
                scores = rng.random(len(present))
                mass = scores * pixels / (scores * pixels).sum()
                area = pixels / pixels.sum()
                for name, n, s, m, a in zip(present, pixels, scores, mass, area, strict=True):
                    info = CITYSCAPES.by_name[name]
                    rows.append((model, method, image, info.id, name, int(n), a, s, m, m / a))
    return pd.DataFrame(rows, columns=list(PER_IMAGE_COLUMNS))


def profiles_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """Means over images with a simple ± spread as the interval (the fixture needs shape, not statistics)."""
    groups = per_image.groupby(["model", "method", "class", "class_id"], sort=False)
    frame = groups.agg(
        score_mean=("score", "mean"),
        score_sd=("score", "std"),
        mass_share=("mass_share", "mean"),
        lift=("lift", "mean"),
        n_images=("image", "size"),
    ).reset_index()
    frame["category"] = [CITYSCAPES.by_id[i].category for i in frame["class_id"]]
    for column in ("score_mean", "mass_share", "lift"):
        stem = "score" if column == "score_mean" else column
        spread = 0.2 * frame[column]
        frame[f"{stem}_ci_low"] = frame[column] - spread
        frame[f"{stem}_ci_high"] = frame[column] + spread
    return frame.drop(columns="score_sd")


def comparisons_table(
    a: str = "pilotnet/gradcam", b: str = "vit/gradcam", rho: tuple[float, float, float] = (0.6, 0.1, 0.9)
) -> pd.DataFrame:
    """`a` vs `b` (default pilotnet vs vit under gradcam): road differs (a higher), the rest do not;
    `rho` is the profile Spearman ρ with its CI."""
    rows = []
    for name in CLASSES:
        info = CITYSCAPES.by_name[name]
        differs = name == "road"
        rows.append(
            (
                a,
                b,
                name,
                info.id,
                4,
                0.6,
                0.3,
                0.3,
                0.0,
                0.01 if differs else 0.5,
            )
        )
    frame = pd.DataFrame(
        rows,
        columns=list(COMPARISON_COLUMNS[:10]),
    )
    frame["p_holm"] = frame["p_value"] * 2
    frame["differs"] = frame["class"] == "road"
    frame["spearman_rho"], frame["spearman_ci_low"], frame["spearman_ci_high"] = rho
    return frame


def attention_tables(rng: np.random.Generator, vits: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Entropy ratios per layer × head and raw-attention class profiles per layer for each ViT."""
    entropy = [
        (m, layer, head, 0.9 + 0.1 * rng.random()) for m in vits for layer in range(3) for head in range(2)
    ]
    layers = []
    for model in vits:
        for layer in range(3):
            for name in CLASSES:
                value = 0.5 + 0.05 * rng.random()
                layers.append(
                    (model, layer, name, CITYSCAPES.by_name[name].id, value, value - 0.02, value + 0.02, 4)
                )
    return (
        pd.DataFrame(entropy, columns=list(ATTENTION.names)),
        pd.DataFrame(layers, columns=list(ATTENTION_PROFILES.names)),
    )


def ground_truth_table() -> pd.DataFrame:
    """Two agreeing checks and one failing one (the report must state the failure)."""
    expected = "road above sky, vegetation, building"
    return pd.DataFrame(
        [
            ("pilotnet", "gradcam", "steering", expected, True, "road ranks 1st"),
            ("vit", "gradcam", "steering", expected, True, "road ranks 1st"),
            ("vit", "gradrollout", "steering", expected, False, "sky ranks above road"),
        ],
        columns=list(GROUND_TRUTH.names),
    )


def write_results(
    folder: Path,
    seed: int = 0,
    models: Models = MODELS,
    *,
    tasks: dict[str, str] | None = None,
    comparisons: pd.DataFrame | None = None,
) -> Path:
    """Write a complete results folder (tables, cards, manifest with checksums) under `folder`.

    With a single model the optional tables (comparisons, attention, ground truth) are left out.
    `tasks` gives a model's card task (default "steering"); `comparisons` replaces the default table.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    per_image = per_image_table(rng, models)
    per_image.to_parquet(folder / "per_image.parquet", index=False)
    profiles_table(per_image).to_csv(folder / "profiles.csv", index=False)
    if len(models) > 1:
        (comparisons_table() if comparisons is None else comparisons).to_csv(
            folder / "comparisons.csv", index=False
        )
        entropy, layers = attention_tables(rng, [m for m, (a, _) in models.items() if "vit" in a])
        entropy.to_csv(folder / "attention.csv", index=False)
        layers.to_csv(folder / "attention_profiles.csv", index=False)
        ground_truth_table().to_csv(folder / "ground_truth.csv", index=False)
    (folder / "cards").mkdir(exist_ok=True)
    for model, (architecture, _) in models.items():
        card = {
            "name": model,
            "task": (tasks or {}).get(model, "steering"),
            "architecture": architecture,
            "metrics": {"mae": 0.1, "r2": 0.8},
        }
        (folder / "cards" / f"{model}.json").write_text(json.dumps(card))
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }
    manifest = {
        "config": {"truthset": "synthetic", "models": list(MODELS)},
        "truthset": {"name": "synthetic", "split": "test"},
        "models": {m: {"architecture": a} for m, (a, _) in models.items()},
        "methods": ["gradcam", "gradrollout", "split"],
        "normalisation": "minmax",
        "resolution": "labels",
        "versions": {"gradsum": "0.1.0"},
        "seeds": {"run": seed},
        "started": "2026-01-01T00:00:00",
        "finished": "2026-01-01T00:01:00",
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


#: The trust fixture's roles: three methods under test, a known-answer control and the four kinds of null.
TRUST_ROLES = {
    "gradcam": METHOD,
    "gradrollout": METHOD,
    "saliency": METHOD,
    "oracle": CONTROL,
    "null:random": CHANCE,
    "null:uniform": CHANCE,
    "null:class_area": CONFOUND,
    "null:sobel": HEURISTIC,
}
#: model → method → mean causal figure per image. On pilotnet the nulls sit at chance (0.5, the threshold):
#: gradcam passes, gradrollout fails (below chance), saliency is inconclusive (0.52 and noisy), the oracle
#: passes. On vit the class-area prior beats chance, so every row there is uninformative.
CAUSAL_MEANS = {
    "pilotnet": {
        "gradcam": 0.8,
        "gradrollout": 0.45,
        "saliency": 0.52,
        "oracle": 0.95,
        "null:random": 0.5,
        "null:uniform": 0.5,
        "null:class_area": 0.5,
        "null:sobel": 0.6,
    },
    "vit": {
        "gradcam": 0.75,
        "gradrollout": 0.85,
        "oracle": 0.95,
        "null:random": 0.5,
        "null:uniform": 0.5,
        "null:class_area": 0.7,
        "null:sobel": 0.6,
    },
}
#: Localisation (no threshold) on pilotnet alone: every method and the oracle beat the nulls at 0.3; on vit
#: the criterion did not run.
LOCALISATION_MEANS = {"gradcam": 0.7, "gradrollout": 0.6, "saliency": 0.5, "oracle": 0.9}
TRUST_IMAGES = 40


def _criterion_rows(means: dict[str, dict[str, float]], column: str) -> pd.DataFrame:
    """Per-image rows: the mean plus a shared ±0.05 alternation (so paired differences are exact), and a
    ±0.3 one of its own for saliency (so its interval straddles the nulls')."""
    rows = []
    for model, methods in means.items():
        for method, mean in methods.items():
            for i in range(TRUST_IMAGES):
                noise = 0.3 * (-1) ** (i // 2) if method == "saliency" else 0.0
                rows.append((model, method, f"{i:04d}", mean + 0.05 * (-1) ** i + noise))
    return pd.DataFrame(rows, columns=["model", "method", "image", column])


def trust_results() -> dict[str, CheckResult]:
    """Two hand-made checks as `run_checks` would return them: causal (threshold 0.5) and localisation."""
    causal = _criterion_rows(CAUSAL_MEANS, "causal")
    localisation = _criterion_rows(
        {"pilotnet": {**LOCALISATION_MEANS, **{m: 0.3 for m in TRUST_ROLES if m.startswith("null:")}}},
        "localisation",
    )

    def summary(rows: pd.DataFrame, column: str, own: str) -> pd.DataFrame:
        means = rows.groupby(["model", "method"], as_index=False)[column].mean()
        return means.rename(columns={column: own}).assign(
            **{f"{own}_ci_low": means[column] - 0.1, f"{own}_ci_high": means[column] + 0.1}
        )

    return {
        "causal": CheckResult(
            {},
            summary(causal, "causal", "density_spearman"),
            [Criterion("causal", "causal", threshold=0.5)],
            causal,
        ),
        "localisation": CheckResult(
            {},
            summary(localisation, "localisation", "mass_accuracy"),
            [Criterion("localisation", "localisation")],
            localisation,
        ),
    }


def trust_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(trust, recommendations) as the trust layer writes them, from `trust_results`."""
    trust = trust_table(trust_results(), TRUST_ROLES, n_resamples=200)
    return trust, recommend(trust)


def add_trust_tables(folder: Path, trust: pd.DataFrame, recommendations: pd.DataFrame) -> Path:
    """Write trust.csv and recommendations.csv into a results folder and list them in its manifest."""
    trust.to_csv(folder / "trust.csv", index=False)
    recommendations.to_csv(folder / "recommendations.csv", index=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["trust_tables"] = ["recommendations", "trust"]
    for name in ("trust.csv", "recommendations.csv"):
        manifest["files"][name] = sha256_file(folder / name)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def add_tables(folder: Path, tables: Mapping[TableSchema, pd.DataFrame]) -> Path:
    """Write a study's tables into a results folder and register them in its manifest, as a run would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for schema, frame in tables.items():
        path = write_table(folder, schema, frame)
        manifest["files"][path.name] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder
