"""Training tasks: the loss and held-out metrics of steering regression and binary obstacle detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from torch.nn import functional

from gradsum.taxonomy import TaskRegistry

Metrics = dict[str, float | None]
#: The metrics where a smaller value is better (the regression errors); for every other one, larger is.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})


@dataclass(frozen=True)
class Task:
    """How a model with output (B, 1) is trained and scored on one kind of target."""

    name: str
    #: (predictions (B,), targets (B,)) → scalar loss
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    #: (predictions, targets) as numpy → named metrics (None where undefined)
    metrics: Callable[[np.ndarray, np.ndarray], Metrics]
    #: the metric the progress bar shows
    headline: str


TRAINING_TASKS: TaskRegistry[Task] = TaskRegistry("task")


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> Metrics:
    """MAE, RMSE and R² (None when the targets are constant)."""
    err = pred.astype(np.float64) - target.astype(np.float64)
    total = float(np.sum((target - target.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "r2": 1.0 - float(np.sum(err**2)) / total if total > 0 else None,
    }


def auroc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann–Whitney) formula; None with one class only."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(logit: np.ndarray, target: np.ndarray) -> Metrics:
    """Accuracy at logit 0, AUROC and the positive rate of the targets."""
    positive = target > 0.5
    return {
        "accuracy": float(np.mean((logit > 0) == positive)),
        "auroc": auroc(logit, positive),
        "positive_rate": float(np.mean(positive)),
    }


TRAINING_TASKS.add("steering", Task("steering", functional.mse_loss, regression_metrics, "r2"))
TRAINING_TASKS.add(
    "obstacle",
    Task("obstacle", functional.binary_cross_entropy_with_logits, binary_metrics, "accuracy"),
)
