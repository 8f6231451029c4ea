"""Segmentation metrics against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from gradsum.errors import ShapeError
from gradsum.labelling.metrics import VOID_IDS, confusion_matrix, scores, total_confusion

ROAD, CAR, SKY, PERSON, UNLABELED = 7, 26, 23, 24, 0


def test_known_answer_with_a_void_pixel() -> None:
    truth = np.array([[ROAD, ROAD, CAR], [CAR, UNLABELED, SKY]], np.uint8)
    predicted = np.array([[ROAD, CAR, CAR], [ROAD, ROAD, SKY]], np.uint8)
    confusion = confusion_matrix(truth, predicted)
    # the void pixel (predicted road) is left out: 5 pixels
    assert confusion.sum() == 5 and confusion[ROAD, ROAD] == 1 and confusion[ROAD, CAR] == 1
    result = scores(confusion)
    # road: TP 1, 2 true, 2 predicted on labelled pixels → 1/3; car likewise; sky 1/1
    assert result.iou == pytest.approx({ROAD: 1 / 3, CAR: 1 / 3, SKY: 1.0})
    assert result.miou == pytest.approx(5 / 9)
    assert result.pixel_accuracy == pytest.approx(3 / 5)
    assert result.to_dict()["iou"] == pytest.approx({"road": 1 / 3, "car": 1 / 3, "sky": 1.0})


def test_classes_absent_from_the_truth_do_not_enter_the_mean() -> None:
    truth = np.full((2, 2), ROAD, np.uint8)
    predicted = np.array([[ROAD, ROAD], [PERSON, UNLABELED]], np.uint8)
    result = scores(confusion_matrix(truth, predicted))
    # a void prediction on a labelled pixel is wrong, like the person
    assert result.iou == {ROAD: 0.5} and result.miou == 0.5 and result.pixel_accuracy == 0.5


def test_frames_pool_their_pixels() -> None:
    a = (np.array([[ROAD, CAR]], np.uint8), np.array([[ROAD, ROAD]], np.uint8))
    b = (np.array([[CAR, CAR, CAR]], np.uint8), np.array([[CAR, CAR, CAR]], np.uint8))
    result = scores(total_confusion([a, b]))
    assert result.iou == pytest.approx({ROAD: 1 / 2, CAR: 3 / 4}) and result.pixel_accuracy == pytest.approx(
        4 / 5
    )


def test_every_ignored_id_is_void_and_only_those() -> None:
    assert {0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30} == VOID_IDS
    truth = np.arange(34, dtype=np.uint8)[None]
    confusion = confusion_matrix(truth, truth)
    assert confusion.sum() == 34 - len(VOID_IDS) and scores(confusion).miou == 1.0


def test_against_sklearn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    ids = np.array([0, 3, 7, 8, 11, 21, 23, 24, 26])
    truth = rng.choice(ids, size=(40, 50)).astype(np.uint8)
    predicted = np.where(rng.random((40, 50)) < 0.6, truth, rng.choice(ids, size=(40, 50))).astype(np.uint8)
    confusion = confusion_matrix(truth, predicted)
    kept = ~np.isin(truth, list(VOID_IDS))
    t, p = truth[kept], predicted[kept]
    expected = sklearn_metrics.confusion_matrix(t, p, labels=np.arange(34))
    np.testing.assert_array_equal(confusion, expected)
    result = scores(confusion)
    present = sorted(set(t.tolist()))
    jaccard = sklearn_metrics.jaccard_score(t, p, labels=present, average=None)
    assert list(result.iou) == present
    np.testing.assert_allclose(list(result.iou.values()), jaccard, rtol=1e-12)
    assert result.pixel_accuracy == pytest.approx(sklearn_metrics.accuracy_score(t, p))


def test_shapes_and_ids_are_checked() -> None:
    with pytest.raises(ShapeError, match="differ in shape"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8))
    with pytest.raises(ShapeError, match="predicted"):
        confusion_matrix(np.zeros((1, 1), np.uint8), np.full((1, 1), 40, np.uint8))
