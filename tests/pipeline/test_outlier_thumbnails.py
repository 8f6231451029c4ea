"""The pipeline draws the report's outlier thumbnails: the shown outliers' frames, labels and maps, each
shrunk to the thumbnail height and equal to the frame, labels and map computed directly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gradsum.attribution import attribute
from gradsum.contract import INPUT_DATA
from gradsum.models import build_model
from gradsum.models.inputs import model_input, resize_uint8
from gradsum.models.loaded import LoadedModel
from gradsum.pipeline import config_from_dict
from gradsum.pipeline.profiler import outlier_thumbnails
from gradsum.report.input_data import THUMBNAIL_HEIGHT
from gradsum.truthsets import ArrayTruthSet

#: Frames twice the thumbnail height (they are shrunk); the model reads a smaller input.
FRAME = (2 * THUMBNAIL_HEIGHT, 4 * THUMBNAIL_HEIGHT)
INPUT = (64, 128)


def test_the_shown_outlier_gets_its_own_frame_labels_and_map() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, *FRAME, 3), dtype=np.uint8)
    labels = rng.choice(np.array([7, 8, 23], dtype=np.uint8), size=(3, *FRAME))
    truthset = ArrayTruthSet(images, labels)
    torch.manual_seed(0)
    model = LoadedModel("cnn", build_model("pilotnet", INPUT).eval(), {}, "steering", INPUT)
    config = config_from_dict(
        {
            "name": "t",
            "truthset": {"path": "unused"},
            "models": [{"name": "cnn", "spec": "pilotnet"}],
            "methods": [{"method": "gradcam"}, {"method": "saliency"}],
        }
    )
    # the split's index 2 is image "b"; only it is flagged (under gradcam)
    frames = pd.DataFrame({"index": [0, 1, 2], "image": ["x", "a", "b"]})
    input_data = pd.DataFrame(
        [
            ("cnn", method, image, 0.0, 0.0, 9.0 if (image, method) == ("b", "gradcam") else 1.0, False)
            for image in ("x", "a", "b")
            for method in ("gradcam", "saliency")
        ],
        columns=list(INPUT_DATA.names),
    )
    input_data["outlier"] = input_data["distance"] > 5

    (thumbnail,) = outlier_thumbnails(config, truthset, [model], input_data, frames, "cpu")

    assert (thumbnail.model, thumbnail.method, thumbnail.image) == ("cnn", "gradcam", "b")
    size = (THUMBNAIL_HEIGHT, 2 * THUMBNAIL_HEIGHT)
    frame = resize_uint8(torch.from_numpy(images[2]).permute(2, 0, 1)[None].contiguous(), size)
    np.testing.assert_array_equal(thumbnail.frame, frame[0].permute(1, 2, 0).numpy())
    # nearest of a 2× shrink reads pixel (2i, 2j) (PyTorch's source index floor(i · 2))
    np.testing.assert_array_equal(thumbnail.labels, labels[2][::2, ::2])
    heat = attribute(model.module, model_input([images[2]], INPUT, "cpu"), "gradcam", task="steering").maps
    expected = F.interpolate(heat[:, None], size=size, mode="bilinear")[0, 0].numpy()
    np.testing.assert_allclose(thumbnail.heat, expected, rtol=1e-5, atol=1e-6)
