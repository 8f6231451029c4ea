"""Instance ids, obstacle instances, cause masks, declared causes, the yawRate sign and the format version."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradsum.errors import GradSUMError, TruthSetError
from gradsum.truthsets import ArrayTruthSet, CauseDeclaration, open_truthset
from gradsum.truthsets.layout import MANIFEST
from gradsum.truthsets.readers.synthetic import SyntheticTruthSet
from gradsum.truthsets.synthetic import generate, render
from gradsum.truthsets.synthetic import scene as sc
from gradsum.truthsets.synthetic.render import IDS
from gradsum.truthsets.synthetic.sensitivity import label_sensitivity_mask
from gradsum.truthsets.synthetic.writer import encode_png

SIZE = (64, 128)
THINGS = ("car", "person")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("instances") / "set", count=12, seed=11, size=SIZE, shortcut=0.9)


@pytest.fixture(scope="module")
def train(root: Path) -> SyntheticTruthSet:
    opened = open_truthset(root, "train")
    assert isinstance(opened, SyntheticTruthSet)
    return opened


def _hand_ids(params: sc.SceneParams) -> list[int]:
    """By hand: the k-th car (person) of params.objects is 26000 + k (24000 + k)."""
    ids, seen = [], {"car": 0, "person": 0}
    for obj in params.objects:
        ids.append({"car": 26, "person": 24}[obj.cls] * 1000 + seen[obj.cls])
        seen[obj.cls] += 1
    return ids


def _changed(a: np.ndarray, b: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1) | (labels_a != labels_b)


def test_instance_ids_follow_class_id_times_1000_plus_k(train: SyntheticTruthSet) -> None:
    for index in range(len(train)):
        params, sample = train.scene(index), train[index]
        assert sample.instances is not None and sample.instances.dtype == np.int32
        expected = _hand_ids(params)
        thing = np.isin(sample.labels, [IDS[c] for c in THINGS])
        assert np.array_equal(sample.instances[~thing], sample.labels[~thing].astype(np.int32))
        assert set(np.unique(sample.instances[thing]).tolist()) <= set(expected)
        assert np.array_equal(sample.instances[thing] // 1000, sample.labels[thing])
        record = train.record(index)
        assert sorted(record["instances"]) == sorted(str(i) for i in expected)
        for obj, instance in zip(params.objects, expected, strict=True):
            assert record["instances"][str(instance)] == {
                "class": obj.cls,
                "z": obj.z,
                "lateral": obj.lateral,
                "obstacle": sc.in_ego_lane(obj) and obj.z <= sc.OBSTACLE_DISTANCE,
            }
        flagged = [int(i) for i, entry in record["instances"].items() if entry["obstacle"]]
        assert sorted(record["obstacle_instances"]) == sorted(flagged)
        assert bool(flagged) == (record["targets"]["obstacle"] == 1.0)


def test_instance_png_is_16_bit_grey_and_round_trips(train: SyntheticTruthSet) -> None:
    path = train.frame(0).instance_ids(train.root)
    assert path.name.endswith("_gtFine_instanceIds.png") and path.parent.name == "synth"
    data = path.read_bytes()
    assert data[24:26] == bytes([16, 0])  # IHDR bit depth 16, colour type 0 (grey)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")
        assert np.array_equal(np.asarray(image).astype(np.int32), render(train.scene(0)).instances)
    # big-endian samples: values whose two bytes differ survive PIL's reading; encoding is deterministic
    values = np.array([[0, 1, 255], [256, 26001, 65535]], dtype=np.uint16)
    encoded = encode_png(values)
    assert encoded == encode_png(values.copy())
    with Image.open(io.BytesIO(encoded)) as image:
        assert np.array_equal(np.asarray(image).astype(np.int64), values.astype(np.int64))
    with pytest.raises(GradSUMError, match="dtype float32 unsupported"):
        encode_png(values.astype(np.float32))


def test_obstacle_instance_is_exactly_what_removing_the_obstacle_changes(train: SyntheticTruthSet) -> None:
    positives = [i for i in range(len(train)) if train.record(i)["obstacle_instances"]]
    assert positives
    for index in positives:
        params, sample = train.scene(index), train[index]
        assert sample.instances is not None
        for position, instance in enumerate(_hand_ids(params)):
            if instance not in train.record(index)["obstacle_instances"]:
                continue
            dropped = render(
                params.replace(objects=params.objects[:position] + params.objects[position + 1 :])
            )
            changed = _changed(sample.image, dropped.image, sample.labels, dropped.labels)
            assert changed.any()
            assert np.array_equal(changed, sample.instances == instance)
            assert dropped.targets["obstacle"] == 0.0


def test_cause_masks(train: SyntheticTruthSet) -> None:
    h, w = SIZE
    # rows nearer than the look-ahead: row centre below horizon + focal · camera height / L
    near = (np.arange(h) + 0.5) > sc.HORIZON * h + sc.FOCAL * w * sc.CAMERA_HEIGHT / sc.LOOK_AHEAD
    for index in range(len(train)):
        sample, record = train[index], train.record(index)
        # steering: the pixels the label's latents move (test_synthetic_sensitivity); the near ego-lane
        # road, the mask before, is the plausibility mask
        steering = train.cause_mask(index, "steering")
        assert steering is not None and steering.dtype == bool
        assert np.array_equal(steering, label_sensitivity_mask(train.scene(index)))
        plausible = train.plausibility_mask(index, "steering")
        assert plausible is not None and plausible.any()
        assert np.all(sample.labels[plausible] == IDS["road"])
        assert not plausible[~near].any()
        obstacle = train.cause_mask(index, "obstacle")
        if record["targets"]["obstacle"] == 0.0:
            assert obstacle is None
            continue
        assert obstacle is not None and sample.instances is not None
        assert np.array_equal(obstacle, np.isin(sample.instances, record["obstacle_instances"]))
        # removing the obstacle class's objects changes (at least) the cause pixels
        erased = train.erase(index, record["instances"][str(record["obstacle_instances"][0])]["class"])
        assert np.all(_changed(sample.image, erased.image, sample.labels, erased.labels)[obstacle])
    with pytest.raises(TruthSetError, match=r"task='speed'.*valid: steering, obstacle"):
        train.cause_mask(0, "speed")


def test_the_base_truth_set_declares_nothing() -> None:
    arrays = ArrayTruthSet(np.zeros((1, 4, 4, 3), np.uint8), np.zeros((1, 4, 4), np.uint8))
    assert arrays.causes == {} and arrays.cause_mask(0, "steering") is None
    assert arrays[0].instances is None


def test_synthetic_declares_the_documented_causes(root: Path, train: SyntheticTruthSet) -> None:
    test = open_truthset(root, "test")
    assert dict(test.causes) == {
        "steering": CauseDeclaration(causal=("road",), independent=("sky", "building", "vegetation")),
        "obstacle": CauseDeclaration(causal=("car", "person"), independent=("sky", "building", "vegetation")),
    }
    # the train split carries the planted sky shortcut (0.9): sky is no longer declared independent
    assert train.causes["steering"] == CauseDeclaration(("road",), ("building", "vegetation"))
    assert all(c in sc.CLASSES for d in sc.CAUSES.values() for c in d.causal + d.independent)


def test_cityscapes_reader_steering_agrees_with_the_synthetic_target(
    root: Path, train: SyntheticTruthSet
) -> None:
    as_cityscapes = open_truthset(root, "train", kind="cityscapes")
    assert as_cityscapes.kind == "cityscapes" and len(as_cityscapes) == len(train)
    steering = as_cityscapes.targets("steering")
    truth = train.targets("steering")
    assert np.corrcoef(steering, truth)[0, 1] > 0.99
    np.testing.assert_allclose(steering, truth * sc.STEERING_SCALE, rtol=1e-5, atol=1e-8)
    assert as_cityscapes.causes == {}
    first = as_cityscapes[0]
    assert first.instances is not None and np.array_equal(first.instances, render(train.scene(0)).instances)


def test_version_1_sets_are_refused_with_a_re_render_hint(root: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(root / MANIFEST, old / MANIFEST)
    manifest = json.loads((old / MANIFEST).read_text())
    (old / MANIFEST).write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(
        TruthSetError, match=r"format_version 1; this reader reads 2: .*gradsum generate --overwrite"
    ):
        open_truthset(old, "test")
