"""Compression: each method against an oracle (numpy sorts, torch's own quantize_dynamic), the compressed
folder's card and reload, and what attribution does with an int8 model."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from gradsum.attribution import attribute
from gradsum.attribution.base import LRP_ON_INT8, METHODS
from gradsum.attribution.precision import LRP_DENOMINATORS
from gradsum.contract import CARD, WEIGHTS
from gradsum.errors import AttributionError, CheckpointError, GradSUMError, SpecError
from gradsum.fileio import sha256_file
from gradsum.models import (
    COMPRESSIONS,
    Int8Linear,
    ModelSpec,
    build_model,
    compress_model,
    compress_variants,
    is_quantised,
    load_model,
    save_model,
)
from gradsum.models.checkpoints import card_for
from gradsum.models.compression import sparsity
from gradsum.models.int8 import CPU_ONLY, INT8_LAYERS
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.models.training import evaluate, preload
from gradsum.truthsets import open_truthset
from gradsum.truthsets.synthetic import generate

SIZE = (64, 128)
ARCH = {"pilotnet": {}, "vit": {"patch_size": 16, "embed_dim": 16, "depth": 1, "num_heads": 2}}
PRUNABLE = (nn.Conv2d, nn.Linear)


def _model(architecture: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(architecture, SIZE, **ARCH[architecture]).eval()


def _images(count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    """The oracle: torch's own dynamic int8 quantisation of a copy."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def _compressed(model: nn.Module, method: str, level: float | None) -> nn.Module:
    compressed = copy.deepcopy(model)
    COMPRESSIONS.get(method).apply(compressed, level, "tiny")
    return compressed


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic set and an untrained pilotnet and ViT whose cards name it."""
    root = tmp_path_factory.mktemp("compression")
    generate(root / "set", count=20, seed=0, size=SIZE)
    found = {"set": root / "set"}
    for architecture, arch in ARCH.items():
        spec = ModelSpec.from_dict(
            {
                "name": f"tiny_{architecture}",
                "architecture": architecture,
                "task": "steering",
                "img_size": list(SIZE),
                "arch": arch,
            },
            "tiny spec",
        )
        card = card_for(spec)
        card.truthset = {"root": str(root / "set")}
        save_model(_model(architecture), card, root / architecture)
        found[architecture] = root / architecture
    return found


@pytest.mark.parametrize("level", [0.3, 0.7])
def test_magnitude_zeroes_exactly_the_smallest_weights_of_all_layers_together(level: float) -> None:
    parent = _model("pilotnet")
    pruned = _compressed(parent, "magnitude", level)
    before = np.concatenate(
        [m.weight.detach().numpy().ravel() for m in parent.modules() if isinstance(m, PRUNABLE)]
    )
    after = np.concatenate(
        [m.weight.detach().numpy().ravel() for m in pruned.modules() if isinstance(m, PRUNABLE)]
    )
    count = round(level * before.size)
    order = np.argsort(np.abs(before), kind="stable")
    assert abs(before[order[count - 1]]) < abs(before[order[count]])  # no tie at the cut
    expected = np.zeros(before.size, dtype=bool)
    expected[order[:count]] = True
    np.testing.assert_array_equal(after == 0, expected)
    np.testing.assert_array_equal(after[~expected], before[~expected])
    assert sparsity(pruned) == count / before.size
    assert abs(sparsity(pruned) - level) <= 0.5 / before.size


def test_channels_zero_the_output_channels_of_smallest_l2_norm_in_each_conv() -> None:
    parent = _model("pilotnet")
    pruned = _compressed(parent, "channels", 0.5)
    pairs = [
        (a, b) for a, b in zip(parent.modules(), pruned.modules(), strict=True) if isinstance(a, nn.Conv2d)
    ]
    assert len(pairs) == 5
    for before, after in pairs:
        weights = before.weight.detach().numpy().reshape(before.out_channels, -1)
        norms = np.linalg.norm(weights, axis=1)
        smallest = set(np.argsort(norms)[: round(0.5 * before.out_channels)].tolist())
        rows = after.weight.detach().numpy().reshape(after.out_channels, -1)
        assert {i for i, row in enumerate(rows) if not row.any()} == smallest
        kept = [i for i in range(before.out_channels) if i not in smallest]
        np.testing.assert_array_equal(rows[kept], weights[kept])
        torch.testing.assert_close(after.bias, before.bias, rtol=0, atol=0)


def test_channels_refuses_a_model_without_conv_layers_naming_it() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 1))
    with pytest.raises(SpecError, match=r"^mlp: method channels prunes .* and mlp has no Conv2d"):
        COMPRESSIONS.get("channels").apply(mlp, 0.5, "mlp")


@pytest.mark.parametrize("architecture", ["pilotnet", "vit"])
def test_int8_outputs_are_torch_quantize_dynamics(architecture: str) -> None:
    parent = _model(architecture)
    int8 = _compressed(parent, "int8_dynamic", None)
    linears = {name for name, m in parent.named_modules() if isinstance(m, nn.Linear)}
    assert {name for name, m in int8.named_modules() if isinstance(m, Int8Linear)} == linears
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())
    with torch.no_grad():
        assert torch.equal(int8(_images()), _quantize_dynamic(parent)(_images()))
        assert not torch.equal(int8(_images()), parent(_images()))


def test_int8_backward_is_the_float_gradient_through_the_dequantised_weight() -> None:
    torch.manual_seed(0)
    parent = nn.Sequential(nn.Linear(5, 3))
    kernel = _quantize_dynamic(parent)[0]
    int8 = _compressed(parent, "int8_dynamic", None)
    inputs = torch.randn(2, 4, 5, requires_grad=True)
    upstream = torch.randn(2, 4, 3)
    output = int8(inputs)
    assert torch.equal(output.detach(), kernel(inputs.detach()))
    (output * upstream).sum().backward()
    qweight = kernel.weight()
    by_hand = (qweight.int_repr().double() - qweight.q_zero_point()) * qweight.q_scale()
    expected = upstream.double().reshape(-1, 3) @ by_hand
    torch.testing.assert_close(inputs.grad.double().reshape(-1, 5), expected, rtol=1e-6, atol=1e-7)


def test_an_int8_folder_is_smaller_and_loads_with_the_outputs_it_was_made_with(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    out = compress_model(folders["vit"], "int8_dynamic", None, tmp_path / "vit_int8")
    loaded, card = load_model(out)
    parent, _ = load_model(folders["vit"])
    oracle = _quantize_dynamic(parent)
    with torch.no_grad():
        assert torch.equal(loaded(_images()), oracle(_images()))
    record = card.compression
    assert record["method"] == "int8_dynamic" and record["level"] is None
    assert record["bytes"] == (out / WEIGHTS).stat().st_size < record["parent_bytes"]
    assert record["parent_bytes"] == (folders["vit"] / WEIGHTS).stat().st_size
    stored = safetensors.torch.load_file(str(out / WEIGHTS))
    assert stored["head.weight"].dtype == torch.int8
    assert torch.equal(stored["head.weight"], oracle.head.weight().int_repr())
    assert record[INT8_LAYERS] == [name for name, m in parent.named_modules() if isinstance(m, nn.Linear)]


def test_metrics_are_remeasured_on_the_parents_test_split_beside_the_parents(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    out = compress_model(folders["pilotnet"], "magnitude", 0.6, tmp_path / "pruned")
    loaded, card = load_model(out)
    parent, parent_card = load_model(folders["pilotnet"])
    data = preload(open_truthset(folders["set"], "test"), "steering", SIZE)
    task = TRAINING_TASKS.get("steering")
    assert card.metrics == evaluate(loaded, data, task, "cpu")[1]
    assert card.compression["parent_metrics"] == evaluate(parent, data, task, "cpu")[1]
    assert card.compression["metrics_split"] == "test"
    assert card.compression["sparsity"] == sparsity(loaded) == pytest.approx(0.6, abs=1e-5)
    assert card.compression["parent_sha256"] == sha256_file(folders["pilotnet"] / WEIGHTS)
    # pruned weights are stored dense
    assert card.compression["bytes"] == card.compression["parent_bytes"]
    assert (card.spec["name"], card.task) == (parent_card.name, parent_card.task)


def test_variants_are_named_by_parent_method_and_level(folders: dict[str, Path], tmp_path: Path) -> None:
    made = compress_variants(folders["pilotnet"], "channels", [0.25, 0.5], tmp_path)
    assert made == [tmp_path / "pilotnet_channels_0.25", tmp_path / "pilotnet_channels_0.5"]
    zeroed = [json.loads((p / CARD).read_text())["compression"]["channels_zeroed"] for p in made]
    # pilotnet's convs have 24, 36, 48, 64, 64 output channels
    assert zeroed == [6 + 9 + 12 + 16 + 16, 12 + 18 + 24 + 32 + 32]


@pytest.mark.parametrize(
    ("method", "level", "device", "message"),
    [
        (
            "prune",
            0.5,
            "cpu",
            r"unknown compression method 'prune' for method.*valid: channels, int8_dynamic, magnitude",
        ),
        (
            "magnitude",
            1.0,
            "cpu",
            r"^level: method magnitude needs a level strictly between 0 and 1 .*got 1.0$",
        ),
        ("magnitude", 0, "cpu", r"^level: .*got 0$"),
        ("channels", None, "cpu", r"^level: method channels needs a level .*got None$"),
        ("int8_dynamic", 0.5, "cpu", r"^level: method int8_dynamic takes no level"),
        (
            "int8_dynamic",
            None,
            "cuda",
            rf"^device 'cuda': method int8_dynamic runs on the CPU only: {re.escape(CPU_ONLY)}; use cpu$",
        ),
    ],
)
def test_bad_input_gets_one_message_and_writes_nothing(
    folders: dict[str, Path], tmp_path: Path, method: str, level: float | None, device: str, message: str
) -> None:
    with pytest.raises(GradSUMError, match=message):
        compress_model(folders["pilotnet"], method, level, tmp_path / "out", device=device)
    assert not list(tmp_path.iterdir())


def test_a_level_out_of_range_among_variants_is_refused_before_any_is_written(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(SpecError, match=r"^levels: .*got 1.5$"):
        compress_variants(folders["pilotnet"], "magnitude", [0.5, 1.5], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model folder"):
        compress_model(tmp_path / "absent", "magnitude", 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_card_naming_a_non_linear_int8_layer_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    out = compress_model(folders["pilotnet"], "int8_dynamic", None, tmp_path / "int8")
    card = json.loads((out / CARD).read_text())
    card["compression"][INT8_LAYERS] = ["features.0"]
    (out / CARD).write_text(json.dumps(card))
    with pytest.raises(
        CheckpointError, match=r"compression.int8_layers' names 'features.0', which is not a linear"
    ):
        load_model(out)


def test_every_lrp_method_declares_the_int8_refusal() -> None:
    lrp = {name for name, cls in METHODS.items() if cls.half_precision_refusal == LRP_DENOMINATORS}
    assert {"chefer_lrp", "attnlrp", "cplrp", "lrp_epsilon_plus"} <= lrp
    refusing = {name for name, cls in METHODS.items() if cls.int8_refusal is not None}
    assert refusing == lrp
    assert all(METHODS.get(name).int8_refusal == LRP_ON_INT8 for name in refusing)


@pytest.mark.parametrize(
    ("architecture", "method"),
    [
        ("vit", "gradcam"),
        ("vit", "rollout"),
        ("vit", "gradrollout"),
        ("vit", "attention"),
        ("pilotnet", "gradient"),
    ],
)
def test_attribution_runs_on_an_int8_model_close_to_its_parents(architecture: str, method: str) -> None:
    parent = _model(architecture)
    int8 = _compressed(parent, "int8_dynamic", None)
    assert is_quantised(int8) and not is_quantised(parent)
    maps = attribute(int8, _images(), method).maps
    reference = attribute(parent, _images(), method).maps
    assert torch.isfinite(maps).all() and maps.shape == reference.shape == (2, *SIZE)
    # int8 rounding moves the maps a little, never to another picture
    assert np.corrcoef(maps.flatten().numpy(), reference.flatten().numpy())[0, 1] > 0.95


@pytest.mark.parametrize(
    ("architecture", "method"), [("pilotnet", "lrp_epsilon_plus"), ("vit", "chefer_lrp")]
)
def test_lrp_refuses_an_int8_model_and_says_why(architecture: str, method: str) -> None:
    parent = _model(architecture)
    attribute(parent, _images(), method)  # the float parent runs it: the refusal is the int8 layers'
    with pytest.raises(
        AttributionError, match=rf"^model: method {method} refuses a model with int8 layers: LRP"
    ):
        attribute(_compressed(parent, "int8_dynamic", None), _images(), method)


def test_a_card_whose_truth_set_is_gone_asks_for_one(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=rf"^truthset: {tmp_path / 'gone'}, the truth set given, is not a folder"
    ):
        compress_model(folders["pilotnet"], "magnitude", 0.5, tmp_path / "out", truthset=tmp_path / "gone")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("architecture", ["pilotnet", "vit"])
def test_model_randomisation_redraws_int8_layers_as_it_redraws_the_parents(architecture: str) -> None:
    from gradsum.evaluation.randomise import randomisation_blocks, randomised

    parent = _model(architecture)
    int8 = _compressed(parent, "int8_dynamic", None)
    blocks = [block.name for block in randomisation_blocks(parent)]
    assert [block.name for block in randomisation_blocks(int8)] == blocks
    top = blocks[0]
    redrawn, oracle = randomised(int8, [top], seed=3), _quantize_dynamic(randomised(parent, [top], seed=3))
    layers = [
        name for name, m in redrawn.named_modules() if name.startswith(top) and isinstance(m, Int8Linear)
    ]
    assert layers
    for name in layers:
        mine, expected = redrawn.get_submodule(name), oracle.get_submodule(name)
        assert torch.equal(mine.weight, expected.weight().int_repr())
        assert not torch.equal(mine.weight, int8.get_submodule(name).weight)
    with torch.no_grad():
        assert torch.equal(redrawn(_images()), oracle(_images()))


def test_an_int8_layer_refuses_an_input_off_the_cpu_with_the_reason() -> None:
    layer = _compressed(nn.Sequential(nn.Linear(5, 3)), "int8_dynamic", None)[0]
    # the meta device stands in for CUDA here: both are off the CPU, where the int8 kernels run
    with pytest.raises(
        SpecError, match=rf"^device meta: this model has int8 layers, and {re.escape(CPU_ONLY)}; use cpu$"
    ):
        layer(torch.empty(2, 5, device="meta"))


def test_a_pruned_model_can_be_quantised_but_an_int8_model_is_not_compressed_again(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    pruned = compress_model(folders["vit"], "magnitude", 0.5, tmp_path / "pruned")
    both = compress_model(pruned, "int8_dynamic", None, tmp_path / "both")
    record = load_model(both)[1].compression
    assert record["parent"] == str(pruned) and record["parent_compression"]["level"] == 0.5
    # zeros quantise to zeros: the pruned weights stay pruned
    assert record["sparsity"] >= 0.5
    with pytest.raises(
        SpecError, match=rf"^model: {both} has int8 layers already \(int8_dynamic of {pruned}\)"
    ):
        compress_model(both, "magnitude", 0.5, tmp_path / "again")
    assert not (tmp_path / "again").exists()
