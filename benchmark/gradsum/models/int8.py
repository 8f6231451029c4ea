"""Int8 linear layers that attribution can backpropagate through.

`quantise_linears` runs PyTorch's own dynamic quantisation (`torch.ao.quantization.quantize_dynamic`,
qint8 weights, per-tensor symmetric scale, activations quantised per batch at run time) and then wraps
each quantised layer in an `Int8Linear`:

- its forward *is* PyTorch's dynamic int8 linear (`torch.ao.nn.quantized.dynamic.Linear`, the module
  `quantize_dynamic` made), so outputs equal `quantize_dynamic`'s bit for bit;
- its backward is the straight-through gradient: the input gradient of a float linear layer whose weight is
  the *dequantised* int8 weight. PyTorch's quantised op has no backward at all; the only step between the
  int8 forward and that float linear is the rounding of the activations to uint8, whose derivative is zero
  almost everywhere, so it is passed through as the identity (the straight-through estimator of
  quantisation-aware training). Gradient methods therefore see the int8 model's forward and the
  dequantised weights' backward.

The layer's state is plain tensors (the int8 weight, its scale and zero point, the float bias), so a
quantised model saves to safetensors like any other and is about four times smaller in its linear layers.
PyTorch's dynamic int8 kernels (fbgemm / x86 / qnnpack) run on the CPU only; a CUDA input is refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized import dynamic

from gradsum.errors import CheckpointError, SpecError

#: the weight type every quantised layer holds
INT8 = torch.qint8
#: why an int8 model runs on the CPU only (the refusal's reason)
CPU_ONLY = "PyTorch's dynamic int8 linear kernels (fbgemm, x86, qnnpack) have no CUDA version"
#: the key under which a compressed card lists its int8 layers (`load_model` rebuilds them from it)
INT8_LAYERS = "int8_layers"


@contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """Silence torch's deprecation notices for `torch.ao` eager quantisation (it points to torchao, which
    is not installed): the code below uses torch's own kernels on purpose, and says so in its records."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated", category=UserWarning)
        yield


class _StraightThrough(torch.autograd.Function):
    """Forward: the int8 kernel. Backward: the input gradient through the dequantised weight."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, layer: Int8Linear) -> Tensor:
        ctx.layer = layer
        ctx.dtype = inputs.dtype
        # the int8 kernel takes float32 only (an autocast region may hand it bf16/fp16)
        return layer.kernel(inputs.float())

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        weight = ctx.layer.dequantised()
        return (grad.float() @ weight).to(ctx.dtype), None


class Int8Linear(nn.Module):
    """A linear layer with int8 weights (see the module docstring): buffers `weight` (int8), `scale` and
    `zero_point`, and a frozen float32 `bias` parameter (or none)."""

    weight: Tensor
    scale: Tensor
    zero_point: Tensor
    bias: nn.Parameter | None
    #: PyTorch's dynamic int8 linear, packed from the tensors above (`repack`)
    kernel: dynamic.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones((), dtype=torch.float32))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int64))
        # a parameter, as nn.Linear's, so code that walks a model's parameters (model randomisation's
        # blocks) finds the layer; frozen: an int8 layer is not trained
        initial = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        self.register_parameter("bias", initial)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.repack())
        self.repack()

    @classmethod
    def from_kernel(cls, kernel: dynamic.Linear) -> Int8Linear:
        """Wrap a layer `quantize_dynamic` made, keeping that very kernel."""
        layer = cls(kernel.in_features, kernel.out_features, kernel.bias() is not None)
        layer._take(kernel)
        return layer

    def _take(self, kernel: dynamic.Linear) -> None:
        """Hold `kernel`'s int8 weight, scale, zero point and bias, and the kernel itself."""
        qweight, bias = kernel.weight(), kernel.bias()
        with torch.no_grad():
            self.weight.copy_(qweight.int_repr())
            # the observer computes the scale in float32, so the float32 buffer holds it exactly
            self.scale.fill_(qweight.q_scale())
            self.zero_point.fill_(qweight.q_zero_point())
            if bias is not None and self.bias is not None:
                self.bias.copy_(bias)
        # kept out of the module tree on purpose: the state dict holds the int8 tensors above, not the
        # kernel's packed parameters (which safetensors cannot store)
        object.__setattr__(self, "kernel", kernel)

    def reset_parameters(self) -> None:
        """Re-draw the layer as `nn.Linear` initialises one (from torch's global generator), quantised as
        `quantise_linears` quantises: how model randomisation re-initialises an int8 layer."""
        fresh = nn.Sequential(nn.Linear(self.in_features, self.out_features, bias=self.bias is not None))
        with _quiet_torch_ao():
            quantised = torch.ao.quantization.quantize_dynamic(fresh, {nn.Linear}, dtype=INT8)
        self._take(quantised[0])

    def repack(self) -> None:
        """Rebuild the int8 kernel from the state tensors (after loading them)."""
        with _quiet_torch_ao():
            kernel = dynamic.Linear(
                self.in_features, self.out_features, bias_=self.bias is not None, dtype=INT8
            )
            scale, zero_point = float(self.scale), int(self.zero_point)
            # (q − z)·s re-quantised with the same s and z rounds back to q exactly
            qweight = torch.quantize_per_tensor(self._dequantise(), scale, zero_point, INT8)
            kernel.set_weight_bias(qweight, None if self.bias is None else self.bias.detach())
        object.__setattr__(self, "kernel", kernel)

    def _dequantise(self) -> Tensor:
        return (self.weight.float() - self.zero_point.float()) * self.scale

    def dequantised(self) -> Tensor:
        """The float32 weight the int8 weight stands for, as PyTorch dequantises it."""
        weight: Tensor = self.kernel.weight().dequantize()
        return weight

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.device.type != "cpu":
            raise SpecError(f"device {inputs.device}: this model has int8 layers, and {CPU_ONLY}; use cpu")
        output: Tensor = _StraightThrough.apply(inputs, self)
        return output

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def quantise_linears(model: nn.Module) -> list[str]:
    """Quantise every `nn.Linear` of `model` in place to an `Int8Linear`; returns their names."""
    with _quiet_torch_ao():
        torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=INT8, inplace=True)
    kernels = {name: module for name, module in model.named_modules() if isinstance(module, dynamic.Linear)}
    for name, kernel in kernels.items():
        _replace(model, name, Int8Linear.from_kernel(kernel))
    return list(kernels)


def int8_skeleton(model: nn.Module, names: Sequence[str], source: str) -> nn.Module:
    """`model` with an empty `Int8Linear` in place of each `nn.Linear` named, ready to load a state into."""
    for name in names:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            raise CheckpointError(
                f"{source}: field 'compression.{INT8_LAYERS}' names {name!r}, which is not a linear layer "
                "of the card's model"
            )
        _replace(model, name, Int8Linear(layer.in_features, layer.out_features, layer.bias is not None))
    return model


def is_quantised(model: nn.Module) -> bool:
    """Whether `model` holds int8 layers."""
    return any(isinstance(module, Int8Linear) for module in model.modules())
