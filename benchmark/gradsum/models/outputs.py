"""What scalar a model's output is: every model maps a batch to (B, 1) or (B,), one value per image
(the steering value or the obstacle logit). Attribution targets and predictions read it from here."""

from __future__ import annotations

from torch import Tensor

from gradsum.errors import AttributionError


def output_values(output: Tensor, argument: str = "output") -> Tensor:
    """The model output as a (B,) tensor; a (B,1) head is squeezed, anything wider is an error."""
    if output.ndim == 2 and output.shape[1] == 1:
        return output[:, 0]
    if output.ndim == 1:
        return output
    # AttributionError: the wrong shape surfaces where a target or a method reads the output
    raise AttributionError(f"{argument}: expected a (B,1) or (B,) model output, got {tuple(output.shape)}")
