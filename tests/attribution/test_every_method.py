"""Cross-method contract tests, driven by the method registry (as timm tests every registered model).

Every entry of `METHODS` is run on a tiny model of each family it applies to and must: leave the model
as it found it (hooks, flags, parameters), leave the global random states alone, give identical maps on
two calls, and answer a per-sample sign flip as its row of `CONTRACTS` says while the other samples'
maps stay put. On each family no two methods may give the same maps unless their rows say they are
meant to (a library's implementation of one of ours). A method registered later fails
`test_every_registered_method_has_a_contract` until it gets a row here.
"""

from __future__ import annotations

import importlib.util
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from gradsum.attribution import METHODS, attribute
from gradsum.attribution.adapters import HOOK_TABLES


class Sign(Enum):
    """What flipping one sample's target sign does to that sample's raw map."""

    #: the map is linear in the explained scalar: it is negated (gradient × input, LRP, ...)
    NEGATES = "negates"
    #: the map does not read the target, or only its magnitude (|∇|, attention, PCA, ablation ratios)
    INVARIANT = "invariant"
    #: a ReLU of a map that is linear in the target: the two maps never overlap (min of both is 0)
    MIRRORS = "mirrors"
    #: the map depends on the target in no closed form (ReLU'd gradients, softmax weights): it changes
    CHANGES = "changes"


@dataclass(frozen=True)
class Contract:
    """One method's row: its sign behaviour and how to run it fast on the tiny models."""

    sign: Sign
    #: the method draws random numbers: it must take a `seed` option, and another seed gives another map
    seeded: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    #: layer per family where the family default does not suit the method
    layers: Mapping[str, str] = field(default_factory=dict)
    #: an optional dependency the method needs (skipped without it)
    requires: str | None = None
    #: the method this one is meant to coincide with (the same formula through another implementation)
    same_as: str | None = None


NEGATES, INVARIANT, MIRRORS, CHANGES = (
    Contract(Sign.NEGATES),
    Contract(Sign.INVARIANT),
    Contract(Sign.MIRRORS),
    Contract(Sign.CHANGES),
)
FEW_STEPS = {"n_steps": 4}
FEW_NOISY = {"nt_samples": 4}
ONE_PASS = {"batch_size": 64}
TOKENIZER = {"hybrid": "tokenizer"}

#: every registered method's contract; a new method needs a row here
CONTRACTS: dict[str, Contract] = {
    # magnitude of gradients, attention, or relative drops (y − y_ablated) / y: the sign cancels
    "ablationcam": Contract(Sign.INVARIANT, options=ONE_PASS),
    "lib:ablationcam": Contract(Sign.INVARIANT, options=ONE_PASS, same_as="ablationcam"),
    "attention": INVARIANT,
    "rollout": INVARIANT,
    "eigencam": INVARIANT,
    "lib:eigencam": Contract(Sign.INVARIANT, same_as="eigencam"),
    # the principal component of gradient × activation is defined up to its sign
    "eigengradcam": INVARIANT,
    "lib:eigengradcam": Contract(Sign.INVARIANT, same_as="eigengradcam"),
    "fem": INVARIANT,
    "lib:fem": Contract(Sign.INVARIANT, same_as="fem"),
    "kpcacam": INVARIANT,
    "lib:kpcacam": Contract(Sign.INVARIANT, same_as="kpcacam"),
    "fullgrad": INVARIANT,
    "lib:fullgrad": Contract(Sign.INVARIANT, same_as="fullgrad"),
    "saliency": INVARIANT,
    "smoothgrad": Contract(Sign.INVARIANT, seeded=True, options=FEW_NOISY),
    "smoothgrad_sq": Contract(Sign.INVARIANT, seeded=True, options=FEW_NOISY),
    "vargrad": Contract(Sign.INVARIANT, seeded=True, options=FEW_NOISY),
    "random": Contract(Sign.INVARIANT, seeded=True),
    "randomcam": Contract(Sign.INVARIANT, seeded=True),
    "lib:randomcam": Contract(Sign.INVARIANT, seeded=True, same_as="randomcam"),
    "sobel": INVARIANT,
    "uniform": INVARIANT,
    # linear in the explained scalar
    "gradient": NEGATES,
    "input_x_gradient": NEGATES,
    "integrated_gradients": Contract(Sign.NEGATES, options=FEW_STEPS),
    "lrp_epsilon_plus": NEGATES,
    "lrp_epsilon_plus_flat": NEGATES,
    "lrp_epsilon_gamma_box": NEGATES,
    "attnlrp": Contract(Sign.NEGATES, requires="lxt"),
    "cplrp": Contract(Sign.NEGATES, requires="lxt"),
    # ReLU of a map linear in the target, on the method's own grid
    "gradcam": MIRRORS,
    "hirescam": MIRRORS,
    "xgradcam": MIRRORS,
    "attention_gradcam": MIRRORS,
    "split": MIRRORS,
    "guided_gradcam": MIRRORS,
    # ReLU'd gradients, higher powers, softmax or upsampling after the ReLU
    "guided_backprop": CHANGES,
    "gradcam++": CHANGES,
    "gradcamelementwise": CHANGES,
    "layercam": CHANGES,
    "gradrollout": CHANGES,
    "chefer_lrp": CHANGES,
    "lib:gradcam": Contract(Sign.CHANGES, same_as="gradcam"),
    "lib:gradcam++": Contract(Sign.CHANGES, same_as="gradcam++"),
    "lib:gradcamelementwise": Contract(Sign.CHANGES, same_as="gradcamelementwise"),
    "lib:hirescam": Contract(Sign.CHANGES, same_as="hirescam"),
    "lib:layercam": Contract(Sign.CHANGES, same_as="layercam"),
    "lib:xgradcam": Contract(Sign.CHANGES, same_as="xgradcam"),
    "scorecam": Contract(Sign.CHANGES, options=ONE_PASS),
    "lib:scorecam": Contract(Sign.CHANGES, options=ONE_PASS, same_as="scorecam"),
    "shapleycam": Contract(Sign.CHANGES, layers=TOKENIZER),
    "lib:shapleycam": Contract(Sign.CHANGES, layers=TOKENIZER, same_as="shapleycam"),
}

CASES = [(name, kind) for name in METHODS.names() for kind in sorted(METHODS.get(name).applies_to)]


def model_state(model: nn.Module) -> dict[str, object]:
    """Everything a call may not change: hooks, modes, flags, parameters and buffers."""
    return {
        "hooks": [sorted(getattr(m, t, {})) for m in model.modules() for t in HOOK_TABLES],
        "training": [m.training for m in model.modules()],
        "fused": [getattr(m, "fused_attn", None) for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def same_state(before: dict[str, object], after: dict[str, object]) -> bool:
    tensors_before, tensors_after = before.pop("state"), after.pop("state")
    assert isinstance(tensors_before, dict) and isinstance(tensors_after, dict)
    equal = tensors_before.keys() == tensors_after.keys() and all(
        torch.equal(tensors_before[k], tensors_after[k]) for k in tensors_before
    )
    return equal and before == after


def random_states() -> tuple[Tensor, object, object]:
    """The global torch, numpy and Python random states."""
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def same_random_states(first: tuple[Tensor, object, object], second: tuple[Tensor, object, object]) -> bool:
    numpy_first, numpy_second = first[1], second[1]
    assert isinstance(numpy_first, tuple) and isinstance(numpy_second, tuple)
    numpy_equal = all(
        np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        for a, b in zip(numpy_first, numpy_second, strict=True)
    )
    return torch.equal(first[0], second[0]) and numpy_equal and first[2] == second[2]


def test_every_registered_method_has_a_contract() -> None:
    missing = sorted(set(METHODS.names()) - set(CONTRACTS))
    assert not missing, f"add a row to CONTRACTS in {__file__} for the new method(s): {', '.join(missing)}"
    assert not set(CONTRACTS) - set(METHODS.names()), "CONTRACTS names a method that is not registered"


def check_sign(contract: Sign, base: Tensor, flipped: Tensor) -> None:
    """Sample 1's map under a flipped target, against its map under the original one."""
    if contract is Sign.NEGATES:
        torch.testing.assert_close(flipped, -base, atol=1e-6, rtol=1e-5)
    elif contract is Sign.INVARIANT:
        torch.testing.assert_close(flipped, base, atol=1e-6, rtol=1e-5)
    elif contract is Sign.MIRRORS:
        assert torch.minimum(flipped, base).abs().max() <= 1e-6
    else:
        assert not torch.allclose(flipped, base, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_method_keeps_its_contract(
    name: str, kind: str, images: Tensor, request: pytest.FixtureRequest
) -> None:
    contract = CONTRACTS.get(name)
    assert contract is not None, f"add a row to CONTRACTS in {__file__} for {name!r}"
    if contract.requires is not None and importlib.util.find_spec(contract.requires) is None:
        pytest.skip(f"{name} needs the optional {contract.requires}")
    # the conftest fixture named after the family: its tiny model
    model: nn.Module = request.getfixturevalue(kind)
    images = images[:2]
    # a model mid-training: train mode, one frozen parameter; the call must hand it back so
    model.train()
    next(model.parameters()).requires_grad_(False)
    before = model_state(model)

    def run(signs: list[float], **extra: Any) -> Tensor:
        options = {**contract.options, **extra}
        layer = contract.layers.get(kind)
        return attribute(model, images, name, target=signs, normalise="raw", layer=layer, **options).grid

    first = run([1.0, 1.0])
    # from the second call on: a first call may import a library lazily, and imports may draw from `random`
    states = random_states()
    again = run([1.0, 1.0])
    flipped = run([1.0, -1.0])

    assert same_state(before, model_state(model)), f"{name} left a change on the {kind} model"
    assert same_random_states(states, random_states()), f"{name} changed a global random state"
    assert torch.equal(first, again), f"{name} gave different maps on two calls"
    torch.testing.assert_close(flipped[0], first[0], atol=1e-6, rtol=1e-5)
    check_sign(contract.sign, first[1], flipped[1])
    if contract.seeded:
        assert "seed" in METHODS.get(name).defaults, f"{name} draws random numbers but takes no seed"
        assert not torch.equal(run([1.0, 1.0], seed=1), first), f"{name} ignores its seed"


#: two maps (min–max normalised, so a scale factor does not count) closer than this everywhere are the
#: same map; the library twins agree to ~1e-6, the closest distinct pair (EigenCAM and KPCA-CAM on the
#: tiny CNN) differs by ~8e-4
SAME_MAP = 1e-5


def family_maps(kind: str, model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Every method that applies to `kind` (its optional dependency present), on the same two images."""
    maps = {}
    for name in METHODS.names():
        contract = CONTRACTS[name]
        if kind not in METHODS.get(name).applies_to:
            continue
        if contract.requires is not None and importlib.util.find_spec(contract.requires) is None:
            continue
        layer = contract.layers.get(kind)
        maps[name] = attribute(model, images, name, target=[1.0, 1.0], layer=layer, **contract.options).maps
    return maps


def meant_to_coincide(first: str, second: str) -> bool:
    return CONTRACTS[first].same_as == second or CONTRACTS[second].same_as == first


@pytest.mark.parametrize("kind", ["cnn", "vit", "hybrid"])
def test_no_two_methods_give_the_same_maps(kind: str, images: Tensor, request: pytest.FixtureRequest) -> None:
    """A method that silently falls back to another (guided backprop without gates is saliency) shows here."""
    model: nn.Module = request.getfixturevalue(kind)
    maps = family_maps(kind, model, images[:2])
    for first, second in itertools.combinations(sorted(maps), 2):
        difference = (maps[first] - maps[second]).abs().max().item()
        if meant_to_coincide(first, second):
            assert difference <= SAME_MAP, f"{first} and {second} should coincide on {kind}: {difference:.2e}"
        else:
            assert difference > SAME_MAP, f"{first} and {second} give the same maps on {kind}"
