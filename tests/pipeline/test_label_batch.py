from __future__ import annotations

import torch

from gradsum.aggregation import LabelBatch, class_scores


def test_prepared_labels_give_the_one_shot_scores_for_smaller_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 34, (3, 40, 80), generator=generator)
    batch = LabelBatch(labels, "label")
    for grid in [(10, 20), (7, 13), (40, 80)]:
        maps = torch.rand(3, *grid, generator=generator)
        prepared = batch.scores(maps)
        direct = class_scores(maps, labels, resolution="label")
        torch.testing.assert_close(prepared.score, direct.score, equal_nan=True, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(
            prepared.mass_share, direct.mass_share, equal_nan=True, rtol=1e-6, atol=1e-9
        )
    assert set(batch._prepared) == {(10, 20), (7, 13)}
