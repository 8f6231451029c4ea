"""Evaluation: do the maps deserve trust? Ground truth from the synthetic set's known causes."""

from __future__ import annotations

from gradsum.evaluation.ground_truth import EXPECTATIONS, Expectation, ground_truth_table

__all__ = ["EXPECTATIONS", "Expectation", "ground_truth_table"]
