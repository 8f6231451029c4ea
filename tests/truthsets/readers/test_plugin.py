"""Plug-in truth sets: every encoding decodes, built-in specs open fake folders, bad specs and files are named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradsum.errors import SpecError, TruthSetError
from gradsum.truthsets import CauseDeclaration, detect_kind, open_truthset
from gradsum.truthsets.encodings import ENCODINGS
from gradsum.truthsets.labels import CITYSCAPES
from gradsum.truthsets.readers.plugin import PluginTruthSet, open_plugin
from gradsum.truthsets.spec import SPEC_FILE, builtin_specs, load_spec

#: a 4×6 map of Cityscapes ids: sky row, building, car next to a person, road
CS_IDS = np.array(
    [[23, 23, 23, 23, 23, 23], [11, 11, 21, 21, 17, 20], [7, 26, 26, 24, 7, 7], [7, 7, 7, 7, 8, 8]],
    dtype=np.uint8,
)
TRAIN_OF = {c.id: c.train_id for c in CITYSCAPES.classes}


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(path: Path, shape: tuple[int, int] = CS_IDS.shape) -> Path:
    return _png(path, np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8))


def _instances(ids: np.ndarray, scale: int) -> np.ndarray:
    instance = np.where(ids >= 24, 3, 0)  # things get an instance number, stuff keeps 0
    return (ids.astype(np.uint16) * scale + instance).astype(np.uint16)


GOOD = {
    "name": "t",
    "images": "images/*.png",
    "labels": "labels/{stem}.png",
    "encoding": "id8",
    "classes": "cityscapes",
}

#: encoding → how a Cityscapes id map is stored in that encoding (with the Cityscapes table)
STORE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "id8": lambda ids: ids,
    "rgb": lambda ids: np.array([c.color for c in CITYSCAPES.classes], dtype=np.uint8)[ids],
    "id1000": lambda ids: np.where(ids >= 24, ids.astype(np.uint16) * 1000 + 2, ids).astype(np.uint16),
    "id256": lambda ids: _instances(ids, 256),
}


def test_every_registered_encoding_has_a_test() -> None:
    assert sorted(STORE) == ENCODINGS.names()


@pytest.mark.parametrize("encoding", sorted(STORE))
def test_every_encoding_decodes_to_cityscapes_ids(tmp_path: Path, encoding: str) -> None:
    _image(tmp_path / "images" / "a.png")
    _png(tmp_path / "labels" / "a.png", STORE[encoding](CS_IDS))
    spec = {**GOOD, "encoding": encoding}
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    sample = open_truthset(tmp_path, "test")[0]
    np.testing.assert_array_equal(sample.labels, CS_IDS)


def _kitti(root: Path, spec: str) -> None:
    _image(root / "training" / "image_2" / "000000_10.png")
    _png(root / "training" / "semantic" / "000000_10.png", CS_IDS)
    _png(root / "training" / "instance" / "000000_10.png", _instances(CS_IDS, 256))


def _bdd(root: Path, spec: str) -> None:
    _image(root / "images" / "10k" / "train" / "0a0a0b1a-7c39d841.jpg")
    train_ids = np.vectorize(TRAIN_OF.get)(CS_IDS).astype(np.uint8)
    _png(root / "labels" / "sem_seg" / "masks" / "train" / "0a0a0b1a-7c39d841.png", train_ids)


CAMVID_OF_CS = {23: 0, 11: 1, 17: 2, 7: 3, 8: 4, 21: 5, 20: 6, 26: 8, 24: 9}


#: Cityscapes id → the CamVid class_dict.csv colour of a class that maps onto it (CS_IDS's classes)
CAMVID_COLOUR_OF_CS = {
    23: (128, 128, 128),  # Sky
    11: (128, 0, 0),  # Building
    17: (192, 192, 128),  # Column_Pole
    7: (128, 64, 128),  # Road
    8: (0, 0, 192),  # Sidewalk
    21: (128, 128, 0),  # Tree
    20: (192, 128, 128),  # SignSymbol
    26: (64, 0, 128),  # Car
    24: (64, 64, 0),  # Pedestrian
}

#: where each CamVid layout puts an image and its label: (image, label) relative paths of stem 0001TP_006690
CAMVID_LAYOUTS = {
    "camvid": ("train/0001TP_006690.png", "trainannot/0001TP_006690.png"),
    "camvid-rgb": ("train/0001TP_006690.png", "train_labels/0001TP_006690_L.png"),
    "camvid-original": ("701_StillsRaw_full/0001TP_006690.png", "LabeledApproved_full/0001TP_006690_L.png"),
}


def _camvid(root: Path, spec: str) -> None:
    image, label = CAMVID_LAYOUTS[spec]
    _image(root / image)
    if spec == "camvid":
        _png(root / label, np.vectorize(CAMVID_OF_CS.get)(CS_IDS).astype(np.uint8))
    else:
        colours = np.zeros((256, 3), np.uint8)
        for cs_id, colour in CAMVID_COLOUR_OF_CS.items():
            colours[cs_id] = colour
        _png(root / label, colours[CS_IDS])


FAKE_FOLDERS = {
    "kitti": _kitti,
    "kitti-instance": _kitti,
    "bdd100k": _bdd,
    "camvid": _camvid,
    "camvid-rgb": _camvid,
    "camvid-original": _camvid,
}


def test_every_builtin_spec_has_a_fake_folder() -> None:
    assert sorted(FAKE_FOLDERS) == builtin_specs().names()


@pytest.mark.parametrize("spec", sorted(FAKE_FOLDERS))
def test_builtin_specs_open_fake_folders_in_cityscapes_ids(tmp_path: Path, spec: str) -> None:
    FAKE_FOLDERS[spec](tmp_path, spec)
    truthset = open_plugin(tmp_path, spec=spec, split=load_spec(spec).split_names[0])
    assert len(truthset) == 1
    sample = truthset[0]
    # every id in CS_IDS has a class in each built-in table, so the round trip is exact
    np.testing.assert_array_equal(sample.labels, CS_IDS)
    assert sample.raw_labels is not None


#: every colour of CamVid's class_dict.csv (the release's own file) → the Cityscapes class it must read as
CAMVID32_TRUTH = {
    (64, 128, 64): "dynamic",  # Animal
    (192, 0, 128): "building",  # Archway
    (0, 128, 192): "bicycle",  # Bicyclist
    (0, 128, 64): "bridge",  # Bridge
    (128, 0, 0): "building",  # Building
    (64, 0, 128): "car",  # Car
    (64, 0, 192): "dynamic",  # CartLuggagePram
    (192, 128, 64): "person",  # Child
    (192, 192, 128): "pole",  # Column_Pole
    (64, 64, 128): "fence",  # Fence
    (128, 0, 192): "road",  # LaneMkgsDriv
    (192, 0, 64): "road",  # LaneMkgsNonDriv
    (128, 128, 64): "traffic sign",  # Misc_Text
    (192, 0, 192): "motorcycle",  # MotorcycleScooter
    (128, 64, 64): "dynamic",  # OtherMoving
    (64, 192, 128): "parking",  # ParkingBlock
    (64, 64, 0): "person",  # Pedestrian
    (128, 64, 128): "road",  # Road
    (128, 128, 192): "road",  # RoadShoulder
    (0, 0, 192): "sidewalk",  # Sidewalk
    (192, 128, 128): "traffic sign",  # SignSymbol
    (128, 128, 128): "sky",  # Sky
    (64, 128, 192): "car",  # SUVPickupTruck
    (0, 0, 64): "static",  # TrafficCone
    (0, 64, 64): "traffic light",  # TrafficLight
    (192, 64, 128): "train",  # Train
    (128, 128, 0): "vegetation",  # Tree
    (192, 128, 192): "truck",  # Truck_Bus
    (64, 0, 64): "tunnel",  # Tunnel
    (192, 192, 0): "vegetation",  # VegetationMisc
    (0, 0, 0): "unlabeled",  # Void
    (64, 192, 0): "wall",  # Wall
}


@pytest.mark.parametrize("spec", ["camvid-rgb", "camvid-original"])
def test_camvid_release_colours_read_as_cityscapes_classes(tmp_path: Path, spec: str) -> None:
    # one frame painted with all 32 release colours (4 rows x 8), in the layout of each release
    colours = np.array(list(CAMVID32_TRUTH), dtype=np.uint8).reshape(4, 8, 3)
    image, label = CAMVID_LAYOUTS[spec]
    _image(tmp_path / image, (4, 8))
    _png(tmp_path / label, colours)
    truthset = open_truthset(tmp_path, load_spec(spec).split_names[0], spec=spec)
    assert len(truthset) == 1
    expected = np.array([CITYSCAPES.by_name[n].id for n in CAMVID32_TRUTH.values()]).reshape(4, 8)
    np.testing.assert_array_equal(truthset[0].labels, expected)
    # SegNet's display colour for pavement is not a release colour: refused, naming spec and colour
    _png(tmp_path / label, np.full((4, 8, 3), (60, 40, 222), np.uint8))
    with pytest.raises(TruthSetError, match=rf"colours not in class table '{spec}': \(60,40,222\)"):
        truthset[0]


def test_bdd_raw_labels_keep_train_ids_and_camvid_bicyclist_is_bicycle(tmp_path: Path) -> None:
    _bdd(tmp_path, "bdd100k")
    sample = open_plugin(tmp_path, "bdd100k", "train")[0]
    assert sample.raw_labels is not None and sample.raw_labels[2, 1] == 13 and sample.labels[2, 1] == 26
    camvid = load_spec("camvid").classes
    assert camvid.by_name["Bicyclist"].cityscapes_id == 33 and camvid.by_name["Unlabelled"].ignore


def test_own_classes_mapping_replace_rule_and_targets(tmp_path: Path) -> None:
    (tmp_path / SPEC_FILE).write_text(
        "name: mine\nimages: 'cam/*_rgb.png'\nlabels: {replace: [[cam/, seg/], [_rgb, _seg]]}\nencoding: id8\n"
        "classes:\n  - {id: 1, name: tarmac}\n  - {id: 2, name: car}\n  - {id: 9, name: junk, cityscapes: unlabeled}\n"
        "mapping: {tarmac: road}\ntargets: targets.csv\n"
    )
    for stem, value in [("b", 2), ("a", 1)]:
        _image(tmp_path / "cam" / f"{stem}_rgb.png", (2, 3))
        _png(tmp_path / "seg" / f"{stem}_seg.png", np.array([[1, 2, 9], [value] * 3], dtype=np.uint8))
    (tmp_path / "targets.csv").write_text("image,steering,obstacle\na_rgb.png,0.25,1\nb_rgb.png,-0.5,0\n")
    assert detect_kind(tmp_path).name == "plugin"
    truthset = open_truthset(tmp_path, "all")
    assert isinstance(truthset, PluginTruthSet) and truthset.tasks == ("steering", "obstacle")
    first = truthset[0]
    assert first.labels.tolist() == [[7, 26, 0], [7, 7, 7]] and first.targets == {
        "steering": 0.25,
        "obstacle": 1,
    }
    np.testing.assert_allclose(truthset.targets("steering"), [0.25, -0.5])
    assert truthset[1].labels[1].tolist() == [26, 26, 26]


BAD_SPECS = [
    ({k: v for k, v in GOOD.items() if k != "labels"}, "field 'labels' is missing"),
    ({**GOOD, "colour": 1}, "field 'colour' is unknown"),
    ({**GOOD, "encoding": "id9"}, r"field 'encoding' is wrong: unknown label encoding 'id9'.*id8"),
    ({**GOOD, "classes": "citiscapes"}, "field 'classes' is wrong.*did you mean cityscapes"),
    ({**GOOD, "classes": [{"id": 1, "name": "blob"}]}, r"field 'classes\[0\].cityscapes' maps 'blob'"),
    ({**GOOD, "classes": [{"id": "x", "name": "road"}]}, r"field 'classes\[0\].id' must be an integer"),
    (
        {**GOOD, "classes": [{"id": 1, "name": "road", "colour": [1, 2, 3]}]},
        r"'classes\[0\].colour' is unknown",
    ),
    ({**GOOD, "mapping": {"blob": "road"}}, "field 'mapping.blob' names no class"),
    ({**GOOD, "labels": "labels/{basename}.png"}, r"field 'labels' uses unknown placeholders \['basename'\]"),
    ({**GOOD, "splits": 3}, "field 'splits' must be"),
    (
        {**GOOD, "causes": {"steering": {"causal": ["raod"]}}},
        r"field 'causes.steering.causal' names no Cityscapes class \('raod'\); valid: unlabeled, .*road,",
    ),
    ({**GOOD, "causes": {"speed": {"causal": ["road"]}}}, "field 'causes.speed' is not a task"),
    ({**GOOD, "causes": {"steering": {"effect": ["road"]}}}, "field 'causes.steering' must be a mapping"),
    (
        {**GOOD, "causes": {"steering": {"causal": ["road"], "independent": ["road"]}}},
        r"field 'causes.steering' declares \['road'\] both causal and independent",
    ),
]


@pytest.mark.parametrize(("spec", "message"), BAD_SPECS, ids=[m.split("'")[1] for _, m in BAD_SPECS])
def test_bad_specs_name_the_file_and_field(tmp_path: Path, spec: dict[str, object], message: str) -> None:
    (tmp_path / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(SpecError, match=rf"{SPEC_FILE}: .*{message}"):
        open_truthset(tmp_path, "test", kind="plugin")


def test_spec_declares_causes_and_other_specs_declare_none(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    _png(tmp_path / "labels" / "a.png", CS_IDS)
    causes = {
        "obstacle": {"causal": ["car", "person"], "independent": ["sky"]},
        "steering": {"causal": ["road"]},
    }
    (tmp_path / SPEC_FILE).write_text(json.dumps({**GOOD, "causes": causes}))
    truthset = open_truthset(tmp_path, "test")
    assert dict(truthset.causes) == {
        "obstacle": CauseDeclaration(causal=("car", "person"), independent=("sky",)),
        "steering": CauseDeclaration(causal=("road",), independent=()),
    }
    assert truthset.cause_mask(0, "steering") is None
    assert all(load_spec(name).causes == {} for name in builtin_specs())


def test_unknown_builtin_spec_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"no such spec file.*camvid"):
        open_plugin(tmp_path, spec="camvidd")
    (tmp_path / SPEC_FILE).write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        open_plugin(tmp_path)


def _folder(root: Path, label: np.ndarray, encoding: str = "id8") -> PluginTruthSet:
    _image(root / "images" / "a.png")
    _png(root / "labels" / "a.png", label)
    (root / SPEC_FILE).write_text(json.dumps({**GOOD, "encoding": encoding}))
    return open_plugin(root)


@pytest.mark.parametrize(
    ("label", "encoding", "message"),
    [
        (
            np.full(CS_IDS.shape, 50, np.uint8),
            "id8",
            r"labels/a\.png: label ids not in class table 't': \[50\]",
        ),
        (np.full((*CS_IDS.shape, 3), 7, np.uint8), "rgb", r"labels/a\.png: colours not in .*\(7,7,7\)"),
        (
            np.zeros((2, 2), np.uint8),
            "id8",
            r"labels/a\.png: label size 2x2 differs from image a\.png size 6x4",
        ),
        (
            np.zeros((*CS_IDS.shape, 3), np.uint8),
            "id8",
            r"labels/a\.png: encoding 'id8' needs a single-channel",
        ),
    ],
    ids=["unknown-id", "unknown-colour", "size-mismatch", "wrong-encoding"],
)
def test_bad_label_files_name_the_file(
    tmp_path: Path, label: np.ndarray, encoding: str, message: str
) -> None:
    with pytest.raises(TruthSetError, match=message):
        _folder(tmp_path, label, encoding)[0]


def test_missing_corrupt_and_empty(tmp_path: Path) -> None:
    truthset = _folder(tmp_path, CS_IDS)
    (tmp_path / "labels" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(TruthSetError, match=r"labels/a\.png: label file is corrupt"):
        truthset[0]
    (tmp_path / "labels" / "a.png").unlink()
    with pytest.raises(TruthSetError, match=r"labels/a\.png: label file is missing"):
        truthset[0]
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(
        TruthSetError,
        match=rf"no images match 'images/\*\.png' \(field 'images' of spec 't' \(.*{SPEC_FILE}\)\)",
    ):
        open_plugin(tmp_path)
    with pytest.raises(
        TruthSetError, match=r"split 'test' unknown to spec 'kitti' \(.*kitti.yaml\); splits: train"
    ):
        open_plugin(tmp_path, "kitti", "test")
