"""Labelling: segmenters that make truth sets from unlabelled frames, and what label quality does to profiles.

`segmenter` holds the `Segmenter` (a segmentation network with its map onto Cityscapes ids) and
`predict`; `segmenters` the architectures and the segmenter folder; `training` trains one on a labelled
truth set (`gradsum train-segmenter`); `writer` labels a folder of frames into a pseudo-labelled truth set
(`gradsum label`).
"""

from __future__ import annotations

from gradsum.labelling.segmenter import INFERENCE_MODES, Prediction, Segmenter, predict
from gradsum.labelling.segmenters import SEGMENTER_ARCHITECTURES, load_segmenter, save_segmenter
from gradsum.labelling.training import train_segmenter
from gradsum.labelling.writer import label_frames

__all__ = [
    "INFERENCE_MODES",
    "SEGMENTER_ARCHITECTURES",
    "Prediction",
    "Segmenter",
    "label_frames",
    "load_segmenter",
    "predict",
    "save_segmenter",
    "train_segmenter",
]
