"""A relabelled truth set is its base in everything but the labels, counterfactuals included."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from gradsum.errors import GradSUMError
from gradsum.evaluation.erasure import InDomainEraser, InDomainPlacebo
from gradsum.truthsets import ArrayTruthSet, RelabelledTruthSet, TruthSet, degradation, open_truthset
from gradsum.truthsets.readers.cityscapes import to_train_ids
from gradsum.truthsets.synthetic import generate


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> TruthSet:
    root = generate(tmp_path_factory.mktemp("relabelled") / "synthetic", count=30, seed=0, size=(32, 64))
    return open_truthset(root, "test")


def shift(labels: np.ndarray, index: int) -> np.ndarray:
    """Labels rolled right by `index + 1` columns: a relabelling that depends on the sample index."""
    return np.roll(labels, index + 1, axis=1)


@pytest.fixture
def relabelled(base: TruthSet) -> RelabelledTruthSet:
    return RelabelledTruthSet(base, shift, "rolled")


def test_samples_keep_everything_but_their_labels(base: TruthSet, relabelled: RelabelledTruthSet) -> None:
    assert len(base) >= 2
    assert len(relabelled) == len(base)
    for index in range(2):
        original, sample = base[index], relabelled[index]
        np.testing.assert_array_equal(sample.image, original.image)
        np.testing.assert_array_equal(sample.instances, original.instances)
        assert sample.targets == original.targets and sample.meta == original.meta
        expected = shift(original.labels, index)
        assert not np.array_equal(expected, original.labels)
        np.testing.assert_array_equal(sample.labels, expected)
        np.testing.assert_array_equal(sample.raw_labels, expected)
        np.testing.assert_array_equal(relabelled.label_map(index), expected)
        np.testing.assert_array_equal(relabelled.image(index), base.image(index))


def test_the_interface_is_the_bases(base: TruthSet, relabelled: RelabelledTruthSet) -> None:
    assert (relabelled.kind, relabelled.root, relabelled.split) == (base.kind, base.root, base.split)
    assert relabelled.tasks == base.tasks and relabelled.class_table is base.class_table
    assert relabelled.causes == base.causes
    assert relabelled.parameters == {**base.parameters, "relabelled": "rolled"}
    assert relabelled.describe()["parameters"]["relabelled"] == "rolled"
    assert relabelled.ERASURE == base.ERASURE  # type: ignore[attr-defined]
    for task in base.tasks:
        np.testing.assert_array_equal(relabelled.targets(task), base.targets(task))
        for index in range(2):
            for mask in ("cause_mask", "plausibility_mask"):
                got, want = getattr(relabelled, mask)(index, task), getattr(base, mask)(index, task)
                assert (got is None and want is None) or np.array_equal(got, want), (mask, task, index)
    batch = relabelled.torch_dataset()[1]
    np.testing.assert_array_equal(batch["labels"].numpy(), shift(base[1].labels, 1))


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("erase", ("car",)),
        ("placebo", ("road",)),
        ("flip_tint", ()),
        ("counterfactual", ("car",)),
    ],
)
def test_counterfactuals_are_the_bases_with_relabelled_labels(
    base: TruthSet, relabelled: RelabelledTruthSet, method: str, args: tuple[str, ...]
) -> None:
    index = 1
    original = getattr(base, method)(index, *args)
    sample = getattr(relabelled, method)(index, *args)
    np.testing.assert_array_equal(sample.image, original.image)
    assert sample.targets == original.targets and sample.meta == original.meta
    np.testing.assert_array_equal(sample.labels, shift(original.labels, index))
    np.testing.assert_array_equal(sample.raw_labels, shift(original.labels, index))


def test_an_index_given_by_keyword_is_relabelled_too(base: TruthSet, relabelled: RelabelledTruthSet) -> None:
    flipped = relabelled.flip_tint(index=2)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(flipped.labels, shift(base.flip_tint(2).labels, 2))  # type: ignore[attr-defined]


def test_protocols_answer_as_for_the_base(base: TruthSet, relabelled: RelabelledTruthSet) -> None:
    assert isinstance(relabelled, InDomainEraser) and isinstance(relabelled, InDomainPlacebo)
    arrays = ArrayTruthSet(np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2), 7, np.uint8))
    plain = RelabelledTruthSet(arrays, lambda labels, index: labels, "same")
    assert not isinstance(plain, InDomainEraser) and not isinstance(plain, InDomainPlacebo)
    with pytest.raises(AttributeError):
        plain.erase  # noqa: B018


def test_label_views_follow_the_new_labels(cityscapes_root: Path) -> None:
    base = open_truthset(cityscapes_root, "val")
    sky_to_road = RelabelledTruthSet(base, lambda labels, index: np.where(labels == 23, 7, labels), "no sky")
    train_ids = sky_to_road.train_ids(0)  # type: ignore[attr-defined]
    assert train_ids[1, 5] == train_ids[5, 5] == 0  # sky's pixel now holds road's trainId
    np.testing.assert_array_equal(train_ids, to_train_ids(sky_to_road.label_map(0)))
    assert base.train_ids(0)[1, 5] == 10  # type: ignore[attr-defined]


def test_a_degradation_relabels_a_set(base: TruthSet) -> None:
    erode = degradation("erode", k=1)
    relabelled = RelabelledTruthSet(base, lambda labels, index: erode(labels), erode.describe())
    np.testing.assert_array_equal(relabelled[0].labels, erode(base[0].labels))


def test_a_relabel_of_the_wrong_shape_or_dtype_is_named(base: TruthSet) -> None:
    wrong = RelabelledTruthSet(base, lambda labels, index: labels.astype(np.int64), "widened")
    with pytest.raises(GradSUMError, match=r"relabel \(widened\): sample 0 must give uint8 \(32, 64\) ids"):
        wrong[0]
    cropped = RelabelledTruthSet(base, lambda labels, index: labels[1:], "cropped")
    with pytest.raises(GradSUMError, match=r"relabel \(cropped\): sample 1 must give uint8"):
        cropped.label_map(1)


def test_it_pickles_for_data_loader_workers(relabelled: RelabelledTruthSet) -> None:
    copy = pickle.loads(pickle.dumps(relabelled))
    np.testing.assert_array_equal(copy[0].labels, relabelled[0].labels)
