"""Attribution precision: float32 (the default), or a half-precision autocast of the method's computation.

Under `bf16` or `fp16` the model's weights stay float32 (`attribution_mode` keeps them so) and the method
runs inside `torch.autocast(device_type, dtype)`: matrix products and convolutions compute in the half
type, reductions and normalisations stay float32 as autocast decides per op, and `attribute` hands the
maps back as float32. `fp32` enters no autocast at all, so its maps are today's, bit for bit.

A method whose rules divide by activations or by sums of contributions declares
`Method.half_precision_refusal`, and `attribute` refuses it with that reason under half precision (see
`LRP_DENOMINATORS`). The fp32 map is the oracle a half-precision map is measured against
(`gradsum bench --suite precision`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from gradsum.errors import AttributionError
from gradsum.registry import Registry

#: the precision `attribute`, the run config and the CLI use when none is named
DEFAULT_PRECISION = "fp32"

#: why the LRP methods (Zennit's ε/αβ/z rules, lxt's AttnLRP and CP-LRP, Chefer's LRP) refuse half precision
LRP_DENOMINATORS = (
    "its rules divide each layer's relevance by activations or by sums of contributions (the ε, αβ and z "
    "rules' denominators); with 8 (bf16) or 11 (fp16) significant bits a sum of contributions of opposite "
    "signs cancels into rounding noise, so a denominator can vanish or flip its sign and the relevance it "
    "scales is no longer that of the model; attribute it in fp32"
)


@dataclass(frozen=True)
class Precision:
    """One precision: the autocast dtype (None: float32 throughout, no autocast) and the devices it runs on."""

    name: str
    description: str
    dtype: torch.dtype | None = None
    #: device types it runs on (None: every device)
    devices: frozenset[str] | None = None

    @property
    def half(self) -> bool:
        """Whether the method computes in a half type (and a method may refuse it)."""
        return self.dtype is not None

    def runs_on(self, device_type: str) -> bool:
        """Whether this precision runs on a device of `device_type` ("cpu", "cuda", ...)."""
        return self.devices is None or device_type in self.devices

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[object]:
        """The context a method runs in: autocast to the half type, or nothing at all for float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)


PRECISIONS: Registry[Precision] = Registry("precision")


def _add(precision: Precision) -> None:
    PRECISIONS.add(precision.name, precision)


_add(Precision(DEFAULT_PRECISION, "float32 throughout, no autocast (the default; today's maps bit for bit)"))
_add(
    Precision(
        "bf16",
        "torch.autocast to bfloat16 (CPU and CUDA); weights stay float32, maps come back float32",
        torch.bfloat16,
        frozenset({"cpu", "cuda"}),
    )
)
_add(
    Precision(
        "fp16",
        "torch.autocast to float16 (CUDA only); weights stay float32, maps come back float32",
        torch.float16,
        frozenset({"cuda"}),
    )
)


def precisions_for(device_type: str) -> list[str]:
    """The precision names that run on a device of `device_type`."""
    return [name for name, precision in PRECISIONS.items() if precision.runs_on(device_type)]


def resolve_precision(name: str, device: torch.device | str, argument: str = "precision") -> Precision:
    """The precision called `name` for `device`; an unknown name, or one the device cannot run, raises an
    error naming `argument` and the valid choices."""
    precision = PRECISIONS.get(name, argument)
    device_type = torch.device(device).type
    if not precision.runs_on(device_type):
        where = ", ".join(sorted(precision.devices or ()))
        raise AttributionError(
            f"{argument}: {name} runs on {where} only, not on {device_type}; "
            f"valid on {device_type}: {', '.join(precisions_for(device_type))}"
        )
    return precision
