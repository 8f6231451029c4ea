"""Half-precision attribution: the autocast a method runs in, a bf16 map against a hand computation, the
refusals (driven by the method registry), and the precision's way through the run config, the pipeline
and the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, Method, attribute, register_method
from gradsum.attribution.base import FAMILIES
from gradsum.attribution.precision import (
    DEFAULT_PRECISION,
    LRP_DENOMINATORS,
    PRECISIONS,
    precisions_for,
    resolve_precision,
)
from gradsum.attribution.targets import Target
from gradsum.cli import main
from gradsum.errors import AttributionError, SpecError, UnknownNameError
from gradsum.evaluation.similarity import SIMILARITIES
from gradsum.models import load_spec, save_model
from gradsum.pipeline import config_from_dict, run
from gradsum.pipeline.inputs import check_names
from gradsum.truthsets.synthetic import generate

#: bfloat16 keeps 8 significant bits: one rounding is at most 2^-8 relative
BF16_EPS = 2.0**-8


# --- the registry ------------------------------------------------------------------------------------


def test_the_registry_says_where_each_precision_runs() -> None:
    assert PRECISIONS.names() == ["bf16", "fp16", "fp32"]
    assert precisions_for("cpu") == ["bf16", "fp32"]
    assert precisions_for("cuda") == ["bf16", "fp16", "fp32"]
    assert not PRECISIONS.get(DEFAULT_PRECISION).half
    assert PRECISIONS.get("bf16").dtype is torch.bfloat16 and PRECISIONS.get("fp16").dtype is torch.float16


def test_an_unknown_precision_lists_the_valid_ones(cnn: nn.Module, images: Tensor) -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown precision 'fp8' for precision.*valid: bf16, fp16, fp32"
    ):
        attribute(cnn, images, "gradcam", precision="fp8")


def test_fp16_on_a_cpu_names_the_argument_and_the_choices_there(cnn: nn.Module, images: Tensor) -> None:
    expected = r"precision: fp16 runs on cuda only, not on cpu; valid on cpu: bf16, fp32"
    with pytest.raises(AttributionError, match=expected):
        attribute(cnn, images, "gradcam", precision="fp16")
    with pytest.raises(AttributionError, match=r"^--precision: fp16 runs on cuda only"):
        resolve_precision("fp16", "cpu", "--precision")
    assert resolve_precision("fp16", "cuda").dtype is torch.float16


# --- what a method runs in ---------------------------------------------------------------------------


class AutocastProbe(Method):
    """Records the autocast state and the weights' dtypes its grid sees; its map is one matrix product."""

    description = "records the autocast state its grid runs in"
    applies_to = FAMILIES
    uses_layer = False
    seen: ClassVar[list[tuple[bool, torch.dtype, set[torch.dtype]]]] = []

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        weights = {p.dtype for p in model.parameters()}
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), weights))
        grey = images.mean(1)
        # the identity, as a product: computed in the autocast dtype, exact in float32
        return grey @ torch.eye(grey.shape[-1], device=grey.device)


@pytest.fixture
def probe() -> Iterator[type[AutocastProbe]]:
    register_method("autocast_probe")(AutocastProbe)
    AutocastProbe.seen.clear()
    yield AutocastProbe
    METHODS.unregister("autocast_probe")


def test_fp32_runs_without_autocast_and_bf16_under_it_on_float32_weights(
    probe: type[AutocastProbe], cnn: nn.Module, images: Tensor
) -> None:
    grey = images.mean(1)
    exact = attribute(cnn, images, "autocast_probe", normalise="raw")
    half = attribute(cnn, images, "autocast_probe", normalise="raw", precision="bf16")
    assert probe.seen[0][0] is False and probe.seen[0][2] == {torch.float32}
    assert probe.seen[1][:2] == (True, torch.bfloat16) and probe.seen[1][2] == {torch.float32}
    assert torch.equal(exact.maps, grey)
    # the product ran in bfloat16 and came back as float32: the grey values rounded to 8 significant bits
    assert half.maps.dtype is torch.float32 and not torch.equal(half.maps, grey)
    torch.testing.assert_close(half.maps, grey.to(torch.bfloat16).float(), rtol=0, atol=0)
    assert (exact.precision, half.precision) == ("fp32", "bf16")
    assert half.describe()["precision"] == "bf16"
    assert {p.dtype for p in cnn.parameters()} == {torch.float32}


def test_fp32_is_the_default_bit_for_bit(cnn: nn.Module, images: Tensor) -> None:
    default = attribute(cnn, images, "gradcam")
    named = attribute(cnn, images, "gradcam", precision="fp32")
    assert torch.equal(default.raw, named.raw) and torch.equal(default.maps, named.maps)


class LinearCAM(nn.Module):
    """A 1×1 convolution (3 → 2 channels) as the CAM layer, then the spatial mean and a linear head.

    Its GradCAM by hand: the output's gradient w.r.t. channel c is v_c / (h·w) at every position, so the
    signed map is Σ_c v_c / (h·w) · A_c, with A = W·x + b the convolution's output.
    """

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.features = nn.Sequential(nn.Conv2d(3, 2, 1))
        self.head = nn.Linear(2, 1)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def hand_gradcam(model: LinearCAM, images: Tensor) -> Tensor:
    """Σ_c v_c / (h·w) · (W_c·x + b_c), in float64."""
    conv, head = model.features[0], model.head
    weight, bias = conv.weight.detach().double()[:, :, 0, 0], conv.bias.detach().double()
    activation = torch.einsum("ck,bkhw->bchw", weight, images.double()) + bias[None, :, None, None]
    scale = head.weight.detach().double()[0] / (images.shape[2] * images.shape[3])
    return torch.einsum("c,bchw->bhw", scale, activation)


def test_a_bf16_gradcam_is_the_hand_computed_map_to_bf16_rounding(images: Tensor) -> None:
    model = LinearCAM().eval()
    oracle = hand_gradcam(model, images).float()
    signs = [1.0] * images.shape[0]
    exact = attribute(model, images, "gradcam", target=signs, postprocess=(), normalise="raw")
    half = attribute(
        model, images, "gradcam", target=signs, postprocess=(), normalise="raw", precision="bf16"
    )
    peak = float(oracle.abs().max())
    torch.testing.assert_close(exact.raw, oracle, rtol=1e-5, atol=1e-6 * peak)
    # the activations, gradients and their product each round once to 8 bits: a few ulps of the peak
    torch.testing.assert_close(half.raw, oracle, rtol=0, atol=4 * BF16_EPS * peak)
    assert not torch.equal(half.raw, exact.raw)
    rho = SIMILARITIES.get("spearman")(exact.maps.numpy(), half.maps.numpy())
    assert rho.min() > 0.99


# --- refusals, from the registry ---------------------------------------------------------------------

REFUSING = [name for name, cls in METHODS.items() if cls.half_precision_refusal is not None]
RUNNING = [
    (name, kind)
    for name, cls in METHODS.items()
    if cls.half_precision_refusal is None
    for kind in sorted(cls.applies_to)
]


def test_the_lrp_methods_declare_their_refusal() -> None:
    lrp = {"lrp_epsilon_plus", "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "attnlrp", "cplrp"}
    assert {name for name in REFUSING if METHODS.get(name).half_precision_refusal == LRP_DENOMINATORS} >= lrp


@pytest.mark.parametrize("name", REFUSING)
def test_a_method_with_a_reason_refuses_half_precision_with_it(
    name: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    cls = METHODS.get(name)
    model: nn.Module = request.getfixturevalue(sorted(cls.applies_to)[0])
    assert cls.half_precision_refusal
    with pytest.raises(AttributionError) as refused:
        attribute(model, images[:2], name, precision="bf16")
    assert str(refused.value) == f"precision: method {name} refuses bf16: {cls.half_precision_refusal}"


@pytest.mark.parametrize(("name", "kind"), RUNNING, ids=[f"{n}-{k}" for n, k in RUNNING])
def test_every_other_method_runs_in_bf16(
    name: str, kind: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    model: nn.Module = request.getfixturevalue(kind)
    result = attribute(model, images[:2], name, target=[1.0, -1.0], precision="bf16")
    assert result.maps.dtype is torch.float32 and result.maps.shape == (2, *images.shape[2:])
    assert torch.isfinite(result.maps).all() and result.precision == "bf16"
    assert {p.dtype for p in model.parameters()} == {torch.float32}


# --- the run config, the pipeline and the command line -----------------------------------------------


def _config(**changes: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "pilotnet", "spec": "pilotnet"}],
        "methods": [{"method": "gradcam"}],
        **changes,
    }


def test_the_run_config_takes_a_precision_and_refuses_a_bad_one() -> None:
    assert config_from_dict(_config()).precision == DEFAULT_PRECISION
    assert config_from_dict(_config(precision="bf16")).precision == "bf16"
    with pytest.raises(UnknownNameError, match=r"precision 'half' for precision.*valid: bf16, fp16, fp32"):
        check_names(config_from_dict(_config(precision="half")))
    with pytest.raises(SpecError, match="precision"):
        config_from_dict(_config(precision=16), "run.yaml")


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same untrained PilotNet, GradCAM and six test scenes, run in fp32 and in bf16."""
    root = tmp_path_factory.mktemp("precision_run")
    truthset = generate(root / "synth", count=12, seed=4, size=(96, 192), splits=(0.25, 0.25, 0.5))
    spec = load_spec("pilotnet")
    torch.manual_seed(0)
    save_model(spec.build().eval(), spec, root / "pilotnet")
    results = {}
    for precision in ("fp32", "bf16"):
        data = _config(
            name=precision,
            precision=precision,
            truthset={"path": str(truthset), "split": "test"},
            models=[{"name": "pilotnet", "checkpoint": str(root / "pilotnet")}],
            evaluation={"checks": []},
            workers=0,
            overlays=0,
            bootstrap_resamples=20,
            models_dir=str(root / "models"),
        )
        results[precision] = run(config_from_dict(data), out=root / "results" / precision)
    return results


def test_a_bf16_run_records_its_precision_and_its_scores_stay_near_fp32(tiny_runs: dict[str, Path]) -> None:
    for precision, folder in tiny_runs.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["precision"] == precision and manifest["config"]["precision"] == precision
    exact, half = (pd.read_parquet(tiny_runs[p] / "per_image.parquet") for p in ("fp32", "bf16"))
    merged = exact.merge(half, on=["model", "method", "image", "class_id"], suffixes=("_fp32", "_bf16"))
    assert len(merged) == len(exact) == len(half) > 0
    difference = (merged["score_fp32"] - merged["score_bf16"]).abs()
    # min-max maps lie in [0, 1]: a class's mean moves by a few bf16 roundings of the map
    assert 0 < difference.max() < 0.05
    assert np.isfinite(merged["score_bf16"]).all()


def _cli(tmp_path: Path, command: str) -> list[str]:
    model, truthset = str(tmp_path / "model"), str(tmp_path / "synth")
    return {
        "attribute": ["attribute", "--model", model, "--truthset", truthset, "--out", str(tmp_path / "out")],
        "profile": ["profile", "--model", model, "--truthset", truthset, "--out", str(tmp_path / "out")],
        "run": ["run", "--out", str(tmp_path / "out")],
    }[command]


@pytest.mark.parametrize("command", ["attribute", "profile", "run"])
def test_the_cli_refuses_an_unknown_precision_naming_the_option(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_cli(tmp_path, command), "--precision", "bogus"]) == 2
    error = capsys.readouterr().err
    assert "unknown precision 'bogus' for --precision" in error and "valid: bf16, fp16, fp32" in error
    assert not (tmp_path / "out").exists()


def test_gradsum_attribute_refuses_fp16_on_a_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_cli(tmp_path, "attribute"), "--device", "cpu", "--precision", "fp16"]) == 2
    assert (
        "--precision: fp16 runs on cuda only, not on cpu; valid on cpu: bf16, fp32" in capsys.readouterr().err
    )
