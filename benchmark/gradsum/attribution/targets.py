"""Attribution targets: which per-sample scalar of the model's output is explained.

Every target turns the output (B,1) or (B,) into B scalars `sign_i · y_i`; their sum is what gets
differentiated, so each sample is explained against its own target and no sample is silently dropped
(the pytorch-grad-cam trap of one target for a whole batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gradsum.errors import AttributionError
from gradsum.models.outputs import output_values
from gradsum.registry import Registry
from gradsum.taxonomy import DEFAULT_TARGETS, TASKS

SignRule = Callable[[Tensor], Tensor]


def _predicted_sign(values: Tensor) -> Tensor:
    # sign(0) would zero the target; a zero output counts as positive
    return torch.where(values < 0, -1.0, 1.0).to(values.dtype)


@dataclass(frozen=True)
class Target:
    """A per-sample sign rule: the explained scalar of sample i is `signs(y)_i · y_i`."""

    name: str
    rule: SignRule
    #: fixed per-sample signs, when the target was given as a list; their count must equal the batch
    fixed: tuple[float, ...] | None = None

    def signs(self, values: Tensor) -> Tensor:
        """Per-sample signs (B,) for output values (B,), computed without gradient."""
        self.check_batch(values.shape[0])
        with torch.no_grad():
            return self.rule(values.detach()).to(values.dtype)

    def select(self, output: Tensor) -> Tensor:
        """Per-sample scalars (B,) whose sum is differentiated."""
        values = output_values(output)
        return self.signs(values) * values

    def check_batch(self, batch: int) -> None:
        """Raise when fixed per-sample signs do not match the batch size."""
        if self.fixed is not None and len(self.fixed) != batch:
            raise AttributionError(
                f"target: {len(self.fixed)} per-sample targets for a batch of {batch} images"
            )


TARGETS: dict[str, Registry[Target]] = {task: Registry(f"{task} target") for task in TASKS}


def _add(task: str, name: str, rule: SignRule) -> None:
    TARGETS[task].add(name, Target(name, rule))


_add("steering", "output", torch.ones_like)
_add("steering", "negative", lambda v: -torch.ones_like(v))
_add("steering", "direction", _predicted_sign)
_add("obstacle", "positive", torch.ones_like)
_add("obstacle", "negative", lambda v: -torch.ones_like(v))
_add("obstacle", "predicted", _predicted_sign)


def per_sample(signs: Sequence[float] | Tensor) -> Target:
    """A target with one fixed sign (+1 explains y, −1 explains −y) per sample of the batch."""
    values = signs.detach().flatten().tolist() if isinstance(signs, Tensor) else list(signs)
    if not values or any(float(s) not in (-1.0, 1.0) for s in values):
        raise AttributionError(f"target: per-sample signs must be +1 or -1, got {values}")
    fixed = tuple(float(s) for s in values)

    def rule(v: Tensor) -> Tensor:
        return torch.tensor(fixed, dtype=v.dtype, device=v.device)

    return Target("per-sample", rule, fixed)


def resolve_target(target: str | Target | Sequence[float] | Tensor | None, task: str = "steering") -> Target:
    """A `Target` from a name of `task`'s targets, a Target, or per-sample signs; None = the default."""
    if isinstance(target, Target):
        return target
    if task not in TARGETS:
        raise AttributionError(f"task: unknown task {task!r}; valid: {', '.join(TASKS)}")
    if target is None:
        target = DEFAULT_TARGETS[task]
    if isinstance(target, str):
        return TARGETS[task].get(target, "target")
    return per_sample(target)
