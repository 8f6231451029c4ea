"""A model profiled on the same Cityscapes frames under gtFine and gtCoarse, compared with paired tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gradsum.cli import main
from gradsum.models import ModelSpec, build_model, save_model

SIZE = (64, 128)
FRAMES = [f"aachen_{number:06d}_000019" for number in range(3)]
SKY, BUILDING, SIDEWALK, ROAD, CAR, UNLABELED = 23, 11, 8, 7, 26, 0


def fine_labels() -> np.ndarray:
    """Sky, building, sidewalk and road bands, a car on the road."""
    labels = np.empty(SIZE, dtype=np.uint8)
    labels[:20], labels[20:32], labels[32:40], labels[40:] = SKY, BUILDING, SIDEWALK, ROAD
    labels[44:56, 80:112] = CAR
    return labels


def coarse_labels() -> np.ndarray:
    """The coarse annotator's view: building left unlabelled, sidewalk and road one road polygon."""
    labels = fine_labels()
    labels[labels == BUILDING] = UNLABELED
    labels[labels == SIDEWALK] = ROAD
    return labels


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained PilotNet profiled on three val frames with gtFine (`fine/`) and with gtCoarse (`coarse/`)."""
    root = tmp_path_factory.mktemp("coarse")
    torch.manual_seed(0)
    save_model(
        build_model("pilotnet", SIZE),
        ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE),
        root / "tiny",
    )
    data = root / "cityscapes"
    rng = np.random.default_rng(0)
    for frame in FRAMES:
        save(
            data / "leftImg8bit" / "val" / "aachen" / f"{frame}_leftImg8bit.png",
            rng.integers(0, 256, (*SIZE, 3), np.uint8),
        )
        save(data / "gtFine" / "val" / "aachen" / f"{frame}_gtFine_labelIds.png", fine_labels())
        save(data / "gtCoarse" / "val" / "aachen" / f"{frame}_gtCoarse_labelIds.png", coarse_labels())
    # gtFine: the folder's detected kind
    fine = [
        "profile",
        "--model",
        str(root / "tiny"),
        "--truthset",
        str(data),
        "--split",
        "val",
        "--checks",
        "",
    ]
    assert main([*fine, "--device", "cpu", "--out", str(root / "fine")]) == 0
    # gtCoarse: the same frames through the coarse reader named on the command line
    coarse = [*fine, "--kind", "cityscapes-coarse"]
    assert main([*coarse, "--device", "cpu", "--out", str(root / "coarse")]) == 0
    return root


def per_image(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "per_image.parquet").set_index(["image", "class_id"])


def test_each_run_counts_its_own_annotation(profiles: Path) -> None:
    for name, labels in (("fine", fine_labels()), ("coarse", coarse_labels())):
        pixels = per_image(profiles / name)["pixels"]
        counts = np.bincount(labels.ravel(), minlength=34)
        expected = {c: int(n) for c, n in enumerate(counts) if n and c != UNLABELED}
        for frame in FRAMES:
            assert pixels.loc[frame].to_dict() == expected, name


def test_compare_pairs_the_frames_and_its_differences_are_the_hand_computed_ones(profiles: Path) -> None:
    out = profiles / "comparisons.csv"
    assert main(["compare", str(profiles / "fine"), str(profiles / "coarse"), "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("class_id")
    assert set(table["a"]) == {"coarse:tiny/gradcam"} and set(table["b"]) == {"fine:tiny/gradcam"}
    assert set(table["test"]) == {"wilcoxon"}
    # only classes both annotations label are paired, each over every frame
    assert sorted(table.index) == [ROAD, SKY, CAR]
    assert (table["n_pairs"] == len(FRAMES)).all() and (table["n_a"] == len(FRAMES)).all()

    # The map is the same under both annotations, so the coarse road score is the fine road and sidewalk
    # mass over their pixels together; sky and car are the same pixels in both.
    fine = per_image(profiles / "fine")
    coarse_road = []
    for frame in FRAMES:
        road, sidewalk = fine.loc[(frame, ROAD)], fine.loc[(frame, SIDEWALK)]
        mass = road["score"] * road["pixels"] + sidewalk["score"] * sidewalk["pixels"]
        coarse_road.append(mass / (road["pixels"] + sidewalk["pixels"]))
    fine_road = np.array([fine.loc[(frame, ROAD), "score"] for frame in FRAMES])
    assert np.abs(fine_road - np.array(coarse_road)).max() > 1e-4, "road and sidewalk scores differ"
    assert table.loc[ROAD, "mean_diff"] == pytest.approx(np.mean(np.array(coarse_road) - fine_road), rel=1e-5)
    assert table.loc[ROAD, "mean_a"] == pytest.approx(np.mean(coarse_road), rel=1e-5)
    assert table.loc[SKY, "mean_diff"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc[CAR, "mean_diff"] == pytest.approx(0.0, abs=1e-6)
