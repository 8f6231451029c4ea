"""Full-resolution frames: 1024×2048 Cityscapes-layout frames profiled by a patch-16 ViT at 1024×2048 input
(64×128 = 8,192 patch tokens) one frame at a time, through docs/full_resolution.md's commands and the API.

The ViT is the DeiT-tiny spec's miniature (patch 16, class token, one block of width 16) so a test can
afford it; the frames, the token count and every pipeline step are those of the documented run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gradsum.attribution import attribute
from gradsum.cli import main
from gradsum.contract import MANIFEST, PER_IMAGE, PROFILES, read_table
from gradsum.models import ModelSpec, load_model, save_model
from gradsum.models.inputs import model_input
from gradsum.pipeline import config_from_dict, run
from gradsum.taxonomy import DEFAULT_TARGETS
from gradsum.truthsets.labels import ignored_cityscapes_ids
from gradsum.truthsets.layout import FrameId

DOC = Path(__file__).resolve().parents[2] / "docs" / "full_resolution.md"
#: Cityscapes' frame size, and the model input the documented commands resize the ViT to
FULL = (1024, 2048)
#: the DeiT-tiny spec's input size (192×384, a 12×24 token grid), where the documented model is made
MADE_AT = (192, 384)
FRAMES = 2
#: Cityscapes ids painted: sky, building, road, car, person; 1 (ego vehicle) is ignored by profiles
SKY, BUILDING, ROAD, CAR, PERSON, EGO = 23, 11, 7, 26, 24, 1


def frame_labels(index: int) -> np.ndarray:
    """A Cityscapes-like label map at 1024×2048: bands of sky, building and road, a car, a person and the
    ego vehicle's bonnet; the car moves with `index` so frames differ."""
    height, width = FULL
    labels = np.full(FULL, SKY, np.uint8)
    labels[300:, :] = BUILDING
    labels[520:, :] = ROAD
    labels[600:760, 900 + 200 * index : 1300 + 200 * index] = CAR
    labels[560:800, 300:380] = PERSON
    labels[height - 100 :, width // 4 : 3 * width // 4] = EGO
    return labels


def frame_image(labels: np.ndarray, index: int) -> np.ndarray:
    """An RGB frame whose colours follow the classes (plus seeded 8×8-block noise: the PNG stays small)."""
    rng = np.random.default_rng(index)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    noise = rng.integers(0, 48, (FULL[0] // 8, FULL[1] // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return palette[labels] // 2 + noise


def write_cityscapes(root: Path, count: int = FRAMES) -> dict[FrameId, np.ndarray]:
    """`count` val frames at 1024×2048 in the official layout (leftImg8bit, gtFine labelIds); their labels."""
    labels = {}
    for index in range(count):
        frame = FrameId("val", "frankfurt", 0, index)
        label = frame_labels(index)
        for path, array in ((frame.image(root), frame_image(label, index)), (frame.label_ids(root), label)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        labels[frame] = label
    return labels


def miniature_spec(img_size: tuple[int, int]) -> ModelSpec:
    """The DeiT-tiny spec's architecture (vit, patch 16, class token) at one block of width 16, 2 heads."""
    return ModelSpec.from_dict(
        {
            "name": "deit_tiny",
            "architecture": "vit",
            "task": "steering",
            "img_size": list(img_size),
            "arch": {"patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
        }
    )


def save_miniature(folder: Path, img_size: tuple[int, int]) -> Path:
    spec = miniature_spec(img_size)
    torch.manual_seed(0)
    save_model(spec.build(), spec, folder)
    return folder


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[FrameId, np.ndarray]]:
    root = tmp_path_factory.mktemp("full") / "cityscapes"
    return root, write_cityscapes(root)


def documented_commands() -> list[list[str]]:
    """The command lines of the page's block marked `<!-- tested -->`, continuation lines joined."""
    match = re.search(r"<!-- tested[^>]*-->\s*```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert match is not None, f"{DOC} has no ```bash block marked <!-- tested -->"
    text = match.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def documented_python() -> str:
    """The page's Python run (its ```python block that calls `run`)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    runs = [block for block in blocks if "run(config)" in block]
    assert len(runs) == 1, f"{DOC}: expected one ```python block that calls run(config)"
    return runs[0]


def hand_scores(maps: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """GradSUM score by hand: each present, non-ignored class's map sum over its pixels ÷ its pixel count."""
    ignored = set(ignored_cityscapes_ids())
    return {
        int(c): float(maps[labels == c].astype(np.float64).sum() / (labels == c).sum())
        for c in np.unique(labels)
        if int(c) not in ignored
    }


def maps_of(model_folder: Path, method: str, image: np.ndarray) -> np.ndarray:
    """One frame's map from `attribute` on the loaded model, as the pipeline calls it (its default target)."""
    module, card = load_model(model_folder)
    batch = model_input([image], tuple(card.spec["img_size"]))
    result = attribute(module, batch, method, target=DEFAULT_TARGETS[card.task], task=card.task)
    return result.maps[0].numpy()


def check_against_hand(
    out: Path, model_folder: Path, model: str, method: str, root: Path, labels: dict[FrameId, np.ndarray]
) -> None:
    """Each frame's per-image scores and the profile's means equal the hand computation from the maps."""
    per_image = read_table(out, PER_IMAGE)
    rows = per_image[(per_image["model"] == model) & (per_image["method"] == method)]
    expected: dict[int, list[float]] = {}
    for frame, label in labels.items():
        image = np.asarray(Image.open(frame.image(root)))
        scores = hand_scores(maps_of(model_folder, method, image), label)
        got = rows[rows["image"] == frame.stem].set_index("class_id")
        assert sorted(got.index) == sorted(scores), frame.stem
        np.testing.assert_allclose(
            got.loc[list(scores), "score"], list(scores.values()), rtol=1e-5, atol=1e-9
        )
        counts = {c: int((label == c).sum()) for c in scores}
        assert got["pixels"].to_dict() == counts
        for c, score in scores.items():
            expected.setdefault(c, []).append(score)
    profile = read_table(out, PROFILES)
    profile = profile[(profile["model"] == model) & (profile["method"] == method)].set_index("class_id")
    for c, scores in expected.items():
        assert profile.loc[c, "n_images"] == len(scores)
        np.testing.assert_allclose(profile.loc[c, "score_mean"], np.mean(scores), rtol=1e-5, atol=1e-9)


def check_manifest(out: Path, model: str) -> dict[str, Any]:
    """The manifest records the model's input size and that no frame was resized for it."""
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["models"][model]["spec"]["img_size"] == list(FULL)
    sizes = manifest["frame_sizes"]
    assert sizes["frames"] == [{"height": FULL[0], "width": FULL[1], "frames": FRAMES}]
    assert sizes["resized"][model] == []
    assert manifest["config"]["batch_size"] == 1
    return dict(manifest)


def test_the_documented_commands_profile_full_resolution_frames(
    cityscapes: tuple[Path, dict[FrameId, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, labels = cityscapes
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "cityscapes").symlink_to(root)
    save_miniature(tmp_path / "models" / "deit_tiny", MADE_AT)
    monkeypatch.chdir(tmp_path)
    commands = documented_commands()
    assert [c[:2] for c in commands] == [["gradsum", "resize"], ["gradsum", "profile"]]
    for command in commands:
        assert main(command[1:]) == 0, command

    resized = Path(commands[0][commands[0].index("--out") + 1])
    out = Path(commands[1][commands[1].index("--out") + 1])
    model = resized.name
    manifest = check_manifest(out, model)
    assert manifest["models"][model]["resized"]["token_grid"] == {"from": [12, 24], "to": [64, 128]}
    assert manifest["config"]["evaluation"]["checks"] == []
    assert manifest["config"]["attention_diagnostics"] is False
    methods = [c for flag, c in zip(commands[1], commands[1][1:], strict=False) if flag == "--method"]
    assert set(read_table(out, PER_IMAGE)["method"]) == set(methods)
    check_against_hand(out, resized, model, "gradcam", root, labels)

    # the page's Python run is the same run: the same per-image table, written where it says
    cli_rows = read_table(out, PER_IMAGE)
    namespace: dict[str, Any] = {}
    exec(compile(documented_python(), str(DOC), "exec"), namespace)
    pd.testing.assert_frame_equal(read_table(namespace["folder"], PER_IMAGE), cli_rows)


def test_the_api_attributes_full_resolution_frames_one_at_a_time(
    cityscapes: tuple[Path, dict[FrameId, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, labels = cityscapes
    folder = save_miniature(tmp_path / "vit_full", FULL)
    batches: list[tuple[str, int]] = []

    def counted(module: torch.nn.Module, images: torch.Tensor, method: str, **kwargs: Any) -> Any:
        batches.append((method, int(images.shape[0])))
        return attribute(module, images, method, **kwargs)

    monkeypatch.setattr("gradsum.pipeline.profiler.attribute", counted)
    config = {
        "name": "full",
        "truthset": {"path": str(root), "split": "val"},
        "models": [{"name": "vit_full", "checkpoint": str(folder)}],
        "methods": [{"method": "gradcam"}, {"method": "rollout"}],
        "evaluation": {"checks": []},
        "attention_diagnostics": False,
        "batch_size": 1,
        "workers": 0,
        "overlays": 2,
        "bootstrap_resamples": 20,
    }
    out = run(config_from_dict(config), out=tmp_path / "results")

    # every attribution, streamed and overlays alike, saw one frame: the stage holds one frame's maps
    streamed_and_overlays = 2 * FRAMES
    assert sorted(batches) == sorted([(m, 1) for m in ("gradcam", "rollout")] * streamed_and_overlays)
    check_manifest(out, "vit_full")
    for method in ("gradcam", "rollout"):
        check_against_hand(out, folder, "vit_full", method, root, labels)


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--batch-size", "0", "--batch-size: must be 1 or more, got 0"),
        ("--checks", "causal,sanitty", "unknown trust check 'sanitty' for --checks (did you mean sanity?)"),
    ],
)
def test_the_profile_flags_refuse_bad_values_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, named: str
) -> None:
    out = tmp_path / "out"
    argv = ["profile", "--model", str(tmp_path / "m"), "--truthset", str(tmp_path / "t"), "--out", str(out)]
    assert main([*argv, flag, value]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1, err
    assert not out.exists()


def test_run_takes_the_batch_size_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["run", "--batch-size", "0", "--out", str(out)]) == 2
    assert "--batch-size: must be 1 or more, got 0" in capsys.readouterr().err
    assert not out.exists()
