"""Typed exceptions: every message names the file, field or argument at fault.

The CLI turns any `GradSUMError` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class GradSUMError(Exception):
    """Base class of every error GradSUM raises on bad input."""


class UnknownNameError(GradSUMError, ValueError):
    """A name (method, model, truth-set kind, ...) that no registry knows."""


class ShapeError(GradSUMError, ValueError):
    """Arrays handed to an API function disagree in shape (frames, label maps, attribution maps)."""


class TruthSetError(GradSUMError):
    """A truth set on disk is missing, corrupt or inconsistent."""


class SpecError(GradSUMError):
    """A declarative spec (model, truth set, run config) has a missing or wrong field."""


class CheckpointError(GradSUMError):
    """A checkpoint cannot be loaded safely or does not match its spec."""


class TrainingError(GradSUMError):
    """Training cannot go on (non-finite loss, unsupported task, ...)."""


class ModelOutputError(GradSUMError):
    """A model produced NaN or infinite outputs."""


class AttributionError(GradSUMError):
    """An attribution method cannot run on this model, layer, batch or target."""


class ResultsError(GradSUMError):
    """A results folder is missing files, or its files disagree with its manifest."""
