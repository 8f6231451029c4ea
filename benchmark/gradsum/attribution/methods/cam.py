"""pytorch-grad-cam's CAM family by name: `lib:<name>` for every method the library offers.

Methods without a fast torch path are also registered under their plain name (`scorecam`,
`eigencam`, ...); `gradcam`, `hirescam`, `gradcam++`, `xgradcam` and `layercam` name the fast path
(`fastcam.py` beside this file). The library always gets explicit per-sample targets whose signs are
fixed from one unperturbed forward, so perturbation methods (ScoreCAM, AblationCAM) score every
masked copy against its own image's target. FinerCAM is left out: it contrasts the target class with
similar classes, and a one-output head has none.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
import tqdm
from torch import Tensor, nn

from gradsum.attribution.adapters import OutputSelector, to_grid
from gradsum.attribution.base import FAMILIES, Method, register_method
from gradsum.attribution.layers import modules_of, resolve_layer
from gradsum.attribution.options import int_option
from gradsum.attribution.targets import Target
from gradsum.errors import AttributionError
from gradsum.models import model_family
from gradsum.models.outputs import output_values
from gradsum.names import LIBRARY_SOURCE, qualified

FAST = frozenset({"gradcam", "hirescam", "gradcam++", "xgradcam", "layercam"})


class SignedOutput:
    """A pytorch-grad-cam target for one sample: its fixed sign times the model's scalar output."""

    def __init__(self, sign: float) -> None:
        self.sign = sign

    def __call__(self, row: Tensor) -> Tensor:
        return self.sign * row.reshape(())


def _token_layers(model: nn.Module, paths: tuple[str, ...]) -> bool:
    # every layer of a ViT outside the hybrid's tokenizer (`patch_embed`) carries tokens, not a 4-D map
    return model_family(model) != "cnn" and not all(p.startswith("patch_embed") for p in paths)


def _ablation_extras(model: nn.Module, paths: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit

    return {
        "ablation_layer": AblationLayerVit() if _token_layers(model, paths) else AblationLayer(),
        "batch_size": int_option(options, "batch_size", minimum=1),
    }


def _no_extras(model: nn.Module, paths: tuple[str, ...], options: dict[str, Any]) -> dict[str, Any]:
    return {}


def _set_batch_size(cam: Any, options: dict[str, Any]) -> None:
    # ScoreCAM reads `batch_size` as an attribute, not a constructor argument
    cam.batch_size = int_option(options, "batch_size", minimum=1)


def _seed_weights(cam: Any, options: dict[str, Any]) -> None:
    """RandomCAM draws its channel weights from numpy's global generator; draw them from `seed` instead."""
    generator = torch.Generator().manual_seed(int_option(options, "seed"))

    def weights(
        input_tensor: Tensor, target_layer: nn.Module, targets: Any, activations: Any, grads: Any
    ) -> Any:
        # the library's U(-1, 1) weights (batch, channels), from a generator this call owns
        drawn = torch.rand(grads.shape[0], grads.shape[1], generator=generator, dtype=torch.float64)
        return (2.0 * drawn - 1.0).numpy()

    cam.get_cam_weights = weights


def _no_configure(cam: Any, options: dict[str, Any]) -> None:
    return None


# pytorch-grad-cam post-processes inside `BaseCAM.forward` with no public way to get the map before it,
# so the library's map is our `raw` and these steps are recorded as the library's, not repeated by us
#: what `BaseCAM.compute_cam_per_layer` and `aggregate_multi_layers` do to every CAM
BASE_CAM_STEPS = (
    "pytorch-grad-cam: relu per layer",
    "pytorch-grad-cam: minmax and resize to input per layer",
    "pytorch-grad-cam: relu, mean over layers, minmax",
)
#: FullGrad overrides both: magnitudes of input and bias gradients, each scaled, summed
FULLGRAD_STEPS = (
    "pytorch-grad-cam: abs and minmax per gradient map, resize to input",
    "pytorch-grad-cam: sum over maps, minmax",
)

#: why ShapleyCAM refuses half precision (`_reshape` makes every other library method's tensors float32)
SHAPLEY_HALF = (
    "pytorch-grad-cam's ShapleyCAM keeps the layer's activations on the graph for its Hessian-vector "
    "product and hands them to numpy in the dtype autocast gave them, past any reshape; numpy has no "
    "bfloat16, and a float32 copy would cut the graph the product needs; attribute it in fp32"
)


@dataclass(frozen=True)
class LibrarySpec:
    """How to build one pytorch-grad-cam method."""

    class_name: str
    description: str
    applies_to: frozenset[str] = FAMILIES
    extras: Callable[[nn.Module, tuple[str, ...], dict[str, Any]], dict[str, Any]] = _no_extras
    defaults: tuple[tuple[str, Any], ...] = ()
    #: adjusts the CAM object after construction from the method's options
    configure: Callable[[Any, dict[str, Any]], None] = _no_configure
    uses_layer: bool = True
    #: double backward through timm's fused attention is not implemented on CPU
    needs_attention: bool = False
    #: False when the library cannot reshape token layers for this method
    token_layers: bool = True
    #: the post-processing the library applies before handing back its map
    performs: tuple[str, ...] = BASE_CAM_STEPS
    #: why the method refuses a half precision (None: it runs under autocast)
    half_precision_refusal: str | None = None


SPECS: dict[str, LibrarySpec] = {
    "gradcam": LibrarySpec("GradCAM", "spatial-mean gradient weights × activations"),
    "hirescam": LibrarySpec("HiResCAM", "element-wise gradient × activation"),
    "gradcam++": LibrarySpec("GradCAMPlusPlus", "higher-order gradient weights"),
    "gradcamelementwise": LibrarySpec("GradCAMElementWise", "ReLU of element-wise gradient × activation"),
    "xgradcam": LibrarySpec("XGradCAM", "activation-normalised gradient weights"),
    "layercam": LibrarySpec("LayerCAM", "relu(gradient) × activation"),
    "eigencam": LibrarySpec("EigenCAM", "first principal component of the activations (no gradient)"),
    "eigengradcam": LibrarySpec("EigenGradCAM", "first principal component of gradient × activation"),
    "kpcacam": LibrarySpec("KPCA_CAM", "kernel-PCA component of the activations (no gradient)"),
    "fem": LibrarySpec("FEM", "feature explanation: channels with outlying means (no gradient)"),
    "scorecam": LibrarySpec(
        "ScoreCAM",
        "output change when the input is masked by each channel (B×C forwards)",
        defaults=(("batch_size", 16),),
        configure=_set_batch_size,
    ),
    "ablationcam": LibrarySpec(
        "AblationCAM",
        "output drop when each channel is zeroed (B×C/batch forwards)",
        extras=_ablation_extras,
        defaults=(("batch_size", 32),),
    ),
    "fullgrad": LibrarySpec(
        "FullGrad",
        "input gradient plus bias gradients of every conv/batch-norm layer (layer ignored)",
        applies_to=frozenset({"cnn"}),
        uses_layer=False,
        performs=FULLGRAD_STEPS,
    ),
    "shapleycam": LibrarySpec(
        "ShapleyCAM",
        "gradient and Hessian-vector product weights (4-D layers: CNNs, the hybrid's tokenizer)",
        applies_to=frozenset({"cnn", "hybrid"}),
        needs_attention=True,
        # with detach=False the library skips reshape_transform, so token layers cannot work
        token_layers=False,
        half_precision_refusal=SHAPLEY_HALF,
    ),
    "randomcam": LibrarySpec(
        "RandomCAM",
        "random channel weights U(-1, 1), seeded (option seed; a sanity baseline)",
        defaults=(("seed", 0),),
        configure=_seed_weights,
    ),
}


def _reshape(tensor: Tensor, model: nn.Module) -> Tensor:
    # the library reads activations and gradients through numpy, which has no bfloat16: under a
    # half-precision autocast they arrive in the half type (a no-op in float32)
    return to_grid(tensor, model).float()


class LibraryCAM(Method):
    """A pytorch-grad-cam method run on explicit per-sample targets and released after the call."""

    spec: ClassVar[LibrarySpec]
    grid_note: ClassVar[str] = "pytorch-grad-cam's map at input resolution, post-processed by the library"

    def grid(self, model: nn.Module, images: Tensor, target: Target, layer: str | None) -> Tensor:
        """The library's maps (B,H,W) as a float32 tensor on the images' device."""
        library = importlib.import_module("pytorch_grad_cam")
        choice = resolve_layer(model, layer) if self.spec.uses_layer else None
        paths = choice.paths if choice else ()
        modules = modules_of(model, choice) if choice else []
        if not self.spec.token_layers and _token_layers(model, paths):
            raise AttributionError(f"layer: {self.name} needs a 4-D feature map, not the token layer {layer}")
        wrapped = model if self.output_key is None else OutputSelector(model, self.output_key)
        with torch.no_grad():
            signs = target.signs(output_values(self.forward(model, images)))
        cam = getattr(library, self.spec.class_name)(
            model=wrapped,
            target_layers=modules,
            reshape_transform=partial(_reshape, model=model),
            **self.spec.extras(model, paths, self.options),
        )
        self.spec.configure(cam, self.options)
        try:
            with _without_library_bars():
                maps = cam(input_tensor=images, targets=[SignedOutput(float(s)) for s in signs.tolist()])
        except (RuntimeError, ValueError, AttributeError, IndexError) as error:
            # pytorch-grad-cam has no exception type of its own: a layer or batch it cannot handle surfaces
            # as one of these from torch, numpy or sklearn inside it; our own callbacks (reshape, targets)
            # raise AttributionError, which passes through untouched
            raise AttributionError(f"method {self.name}: pytorch-grad-cam failed: {error}") from error
        finally:
            # the library keeps the graph (retain_graph) and activation copies until released; its
            # own clear() fails on ShapleyCAM's view gradients, so the lists are emptied first
            store = cam.activations_and_grads
            store.activations, store.gradients = [], []
            store.release()
            cam.outputs = None
        return torch.from_numpy(maps).to(device=images.device, dtype=torch.float32)


#: pytorch-grad-cam modules that draw a tqdm bar in every call (per image, over channel batches): thousands
#: of bars in a run's log (24,000 in one leaderboard seed's), beside the pipeline's own
LIBRARY_BAR_MODULES = (
    "pytorch_grad_cam.score_cam",
    "pytorch_grad_cam.ablation_cam",
    "pytorch_grad_cam.ablation_cam_multilayer",
)


@contextlib.contextmanager
def _without_library_bars() -> Iterator[None]:
    """The library's per-call bars disabled while the block runs, its modules as they were after it."""
    modules = [importlib.import_module(name) for name in LIBRARY_BAR_MODULES]
    # getattr and setattr: the library's modules import tqdm without declaring it for type checkers
    saved = [getattr(module, "tqdm") for module in modules]  # noqa: B009
    quiet = types.SimpleNamespace(tqdm=partial(tqdm.tqdm, disable=True))
    for module in modules:
        setattr(module, "tqdm", quiet)  # noqa: B010
    try:
        yield
    finally:
        for module, bar in zip(modules, saved, strict=True):
            setattr(module, "tqdm", bar)  # noqa: B010


def _library_class(spec: LibrarySpec, plain: bool) -> type[Method]:
    """A `LibraryCAM` for `spec`; `plain`: registered under its own name (it has no fast path)."""
    label = "pytorch-grad-cam, no fast path" if plain else "pytorch-grad-cam"
    return type(
        spec.class_name,
        (LibraryCAM,),
        {
            "spec": spec,
            "description": f"{spec.class_name} ({label}): {spec.description}",
            "applies_to": spec.applies_to,
            "uses_layer": spec.uses_layer,
            "needs_attention": spec.needs_attention,
            # a method that cannot read token layers reads a hybrid at its 4-D tokenizer unless told otherwise
            "default_layer": {} if spec.token_layers else {"hybrid": "tokenizer"},
            "defaults": dict(spec.defaults),
            "performs": spec.performs,
            "half_precision_refusal": spec.half_precision_refusal,
            "__doc__": f"pytorch-grad-cam's {spec.class_name}.",
        },
    )


# one class per library method and name, each registered like any method (`register_method` sets its name)
for _name, _spec in SPECS.items():
    register_method(qualified(LIBRARY_SOURCE, _name))(_library_class(_spec, plain=False))
    if _name not in FAST:
        register_method(_name)(_library_class(_spec, plain=True))
