"""A method added from outside the package, as docs/design.md's recipe says: one `Method`, one decorator.

The method lives in this test module, not in `gradsum.attribution.methods`: `@register_method` alone makes
its name valid everywhere a built-in name is (the API, `gradsum methods`, a profile run), and the registry
is handed back unchanged afterwards, so the contract table (`test_every_method.py`) never sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, Method, attribute, register_method
from gradsum.attribution.base import FAMILIES
from gradsum.attribution.targets import Target
from gradsum.cli import main
from gradsum.contract import PER_IMAGE, read_table
from gradsum.models import ModelSpec, build_model, save_model
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

NAME = "red_channel"
SIZE = (64, 128)


@contextmanager
def red_channel_registered() -> Iterator[type[Method]]:
    """The recipe's steps 1-2, from outside the package; the registry is handed back as it was on exit."""
    with pytest.MonkeyPatch.context() as patch:
        # a copy of the registry's table stands in for it, so whatever is registered here goes with it
        patch.setattr(METHODS, "_entries", dict(METHODS._entries))

        @register_method(NAME)
        class RedChannel(Method):
            """The map is the input's red channel: a method whose every value is known by hand."""

            description = "the input's red channel (an extension test)"
            applies_to = FAMILIES
            uses_layer = False

            def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
                return images[:, 0]

        yield RedChannel


@pytest.fixture
def red_channel() -> Iterator[type[Method]]:
    """The extension method, registered for one test."""
    with red_channel_registered() as method:
        yield method


def minmax(pixels: np.ndarray) -> np.ndarray:
    """Per-image min-max by hand: (x − min) / (max − min)."""
    return (pixels - pixels.min()) / (pixels.max() - pixels.min())


def test_the_decorator_registers_it_and_the_registry_is_handed_back_unchanged() -> None:
    before = METHODS.items()
    with red_channel_registered() as method:
        assert METHODS.get(NAME) is method and method.name == NAME
        assert METHODS.names() == sorted([*(name for name, _ in before), NAME])
    assert METHODS.items() == before and NAME not in METHODS


def test_gradsum_methods_lists_it(red_channel: type[Method], capsys: pytest.CaptureFixture[str]) -> None:
    line = "red_channel            cnn/hybrid/vit   -      the input's red channel (an extension test)"
    assert main(["methods"]) == 0
    assert line in capsys.readouterr().out.splitlines()
    assert main(["methods", "--family", "vit"]) == 0
    assert line in capsys.readouterr().out.splitlines()


def test_the_api_computes_it(red_channel: type[Method], any_model: nn.Module, images: Tensor) -> None:
    result = attribute(any_model, images, NAME)
    expected = np.stack([minmax(image[0].numpy()) for image in images])
    np.testing.assert_allclose(result.maps.numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(attribute(any_model, images, NAME, normalise="raw").maps, images[:, 0])
    assert result.steps == ("normalise minmax",) and result.method == NAME


@pytest.fixture(scope="module")
def checkpoint_and_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("extension")
    spec = ModelSpec(name="tiny", architecture="pilotnet", task="steering", img_size=SIZE)
    torch.manual_seed(0)
    save_model(build_model("pilotnet", SIZE), spec, root / "model")
    generate(root / "set", count=20, seed=0, size=SIZE)
    return root / "model", root / "set"


def test_a_profile_run_profiles_it(
    red_channel: type[Method], checkpoint_and_set: tuple[Path, Path], tmp_path: Path
) -> None:
    model, truthset = checkpoint_and_set
    out = tmp_path / "out"
    argv = [
        "profile",
        "--model",
        str(model),
        "--truthset",
        str(truthset),
        "--method",
        NAME,
        "--out",
        str(out),
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    per_image = read_table(out, PER_IMAGE)
    assert set(per_image["method"]) == {NAME}
    samples = list(open_truthset(truthset, "test"))
    assert set(per_image["image"]) == {sample.meta["frame"] for sample in samples}
    # oracle: the map is the min-maxed red channel (frames are at the model's size), so a class's score is
    # its mean over the class's pixels and its mass share its sum over the image's sum
    for sample in samples:
        relevance = minmax(sample.image[..., 0].astype(np.float32) / 255)
        rows = per_image[per_image["image"] == sample.meta["frame"]]
        assert len(rows) > 1
        for row in rows.itertuples():
            pixels = sample.labels == row.class_id
            assert row.pixels == pixels.sum()
            assert row.score == pytest.approx(relevance[pixels].mean(), abs=1e-6)
            assert row.mass_share == pytest.approx(relevance[pixels].sum() / relevance.sum(), abs=1e-6)
