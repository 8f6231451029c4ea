"""What every trust check reads and returns, the base class of checks and their registry.

A check is a `TrustCheck` with a name, a one-line description, its options and tables, and
`evaluate(context, options) -> CheckResult`; the checks GradSUM ships live in `gradsum.evaluation.checks`,
one module each, registered with `@register_check`. The
context holds the models, the images under evaluation and the attribution plan of the run, so a check
never re-reads a config; its result is a set of named tables (written as `<name>.csv`) plus, per
model × method, the figures the trust table shows. The roles and `PlannedMethod` are defined in
`gradsum.evaluation.planned` (which the null explainers and the controls read) and re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradsum.contract import BOOL, FLOAT, INT, TEXT, TableSchema
from gradsum.dataspec import build
from gradsum.errors import GradSUMError
from gradsum.evaluation.planned import CHANCE as CHANCE
from gradsum.evaluation.planned import CONFOUND as CONFOUND
from gradsum.evaluation.planned import CONTROL as CONTROL
from gradsum.evaluation.planned import GATING_ROLES as GATING_ROLES
from gradsum.evaluation.planned import HEURISTIC as HEURISTIC
from gradsum.evaluation.planned import METHOD as METHOD
from gradsum.evaluation.planned import NULL_ROLES as NULL_ROLES
from gradsum.evaluation.planned import ROLES as ROLES
from gradsum.evaluation.planned import PlannedMethod as PlannedMethod
from gradsum.models.inputs import model_input
from gradsum.models.loaded import LoadedModel
from gradsum.registry import Registry
from gradsum.truthsets import TruthSet
from gradsum.truthsets.base import Sample, sample_id

log = logging.getLogger(__name__)
T = TypeVar("T")


class FinishedParts(Protocol):
    """Where a run keeps the parts of a long check's work as they finish (one model's share of the sanity
    or ROAD check), so that a run killed during the check resumes after its last finished part."""

    def load_part(self, check: str, part: str) -> tuple[Any, float] | None:
        """What part `part` of check `check` returned and the seconds it took, when it finished with the same
        settings; else None."""

    def save_part(self, check: str, part: str, value: Any, seconds: float) -> None:
        """Keep what part `part` of check `check` returned and the seconds it took."""


@dataclass
class EvaluationContext:
    """The images, models and methods under evaluation, and the run's shared settings."""

    truthset: TruthSet
    #: indices into `truthset` of the evaluated images (the same images for every check)
    indices: Sequence[int]
    models: Sequence[LoadedModel]
    #: model name → the methods the run attributes it with (null explainers included by the caller)
    plan: Mapping[str, Sequence[PlannedMethod]]
    #: task → attribution target name
    targets: Mapping[str, str]
    device: str = "cpu"
    seed: int = 0
    batch_size: int = 32
    n_resamples: int = 1000
    resolution: str = "label"
    #: the run's GradSUM per-image rows (per_image.parquet columns), when the run computed them
    per_image: pd.DataFrame | None = None
    #: check name → options (e.g. {"sanity": {"blocks": 3}})
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: results one check computes and another reuses on the same images (e.g. the causal effects)
    cache: dict[str, Any] = field(default_factory=dict)
    #: maps kept for the checks that follow (model, method label, image id) → (H, W), on the CPU; room for
    #: every map of a synth-v1 evaluation (200 images × 48 rows × 6 models at 96×192 is 4.2 GB), since at
    #: 1 GiB its localisation check recomputed three maps in four (987 s of a seed's run)
    map_cache_bytes: int = 6 << 30
    #: where the parts of a check are kept as they finish (`part`); None: nowhere, a killed check restarts
    finished_parts: FinishedParts | None = None
    #: check name → the seconds its parts read back from an interrupted run took then
    kept_seconds: dict[str, float] = field(default_factory=dict)
    _maps: dict[tuple[str, str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _cached_bytes: int = 0

    def part(self, check: str, part: str, compute: Callable[[], T]) -> T:
        """`compute()`, one part of check `check`'s work (one model's share), read back instead where an
        interrupted run finished it (`finished_parts`) and kept as it finishes. The part must depend on
        nothing the check computed before it: every draw of a check is seeded by the run and the image."""
        if self.finished_parts is None:
            return compute()
        kept = self.finished_parts.load_part(check, part)
        if kept is not None:
            value, seconds = kept
            self.kept_seconds[check] = self.kept_seconds.get(check, 0.0) + seconds
            log.info("trust check %s: %s kept from an interrupted run (%.1f s then)", check, part, seconds)
            return value
        start = time.perf_counter()
        value = compute()
        self.finished_parts.save_part(check, part, value, round(time.perf_counter() - start, 2))
        return value

    def sample_batches(self, size: int | None = None) -> Iterator[tuple[list[str], list[Sample], list[int]]]:
        """(ids, samples, indices) over the evaluated images, each sample read once."""
        step = size or self.batch_size
        for start in range(0, len(self.indices), step):
            chunk = list(self.indices[start : start + step])
            samples = [self.truthset[i] for i in chunk]
            # checks stack a batch's label maps: frames of another size go in a batch of their own
            groups: dict[tuple[int, ...], list[int]] = {}
            for position, sample in enumerate(samples):
                groups.setdefault(sample.labels.shape, []).append(position)
            for positions in groups.values():
                kept = [chunk[p] for p in positions]
                group = [samples[p] for p in positions]
                yield [sample_id(s.meta, i) for s, i in zip(group, kept, strict=True)], group, kept

    def batches(self, size: int | None = None) -> Any:
        """(ids, images uint8 (B,H,W,3) list, labels (B,H,W) uint8 array, indices) over the evaluated images."""
        for ids, samples, chunk in self.sample_batches(size):
            yield ids, [s.image for s in samples], [s.labels for s in samples], chunk

    def model_input(self, model: LoadedModel, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Images as `model` takes them (the one input transform of `gradsum.models.inputs`)."""
        return model_input(images, model.img_size, self.device)

    def maps(
        self,
        model: LoadedModel,
        method: PlannedMethod,
        batch: torch.Tensor,
        labels: torch.Tensor,
        ids: Sequence[str] | None = None,
        indices: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(B, H, W) maps of `method` at the model's input size.

        `labels` (B,h,w) are the images' Cityscapes ids and `indices` their indices into `truthset`: the
        model-free maps (`MODEL_FREE_MAPS`: the class-area and positional priors, the known-answer
        controls) are read from them, the truth set and the causal referee. The controls need the images'
        `ids` or `indices` (either is looked up from the other, `image_indices`; pass both where the
        caller has them). With the images' `ids`, maps are computed once per image and reused by every
        later check (up to `map_cache_bytes`): the checks of one evaluation read the same images with the
        same methods.
        """
        keys = [(model.name, method.name, image) for image in ids] if ids is not None else None
        if keys is not None and all(key in self._maps for key in keys):
            return torch.stack([self._maps[key] for key in keys]).to(batch.device)
        maps = planned_maps(
            model, method, batch, labels, self.targets.get(model.task), context=self, ids=ids, indices=indices
        )
        if ids is not None:
            self.remember(model.name, method.name, ids, maps)
        return maps

    def remember(self, model: str, label: str, ids: Sequence[str], maps: torch.Tensor) -> None:
        """Keep maps computed elsewhere (the pipeline's attribution stage) for the checks, as `maps` would."""
        size = maps[0].numel() * 4
        for image, image_map in zip(ids, maps.detach().float().cpu(), strict=True):
            if (model, label, image) in self._maps or self._cached_bytes + size > self.map_cache_bytes:
                continue
            self._maps[(model, label, image)] = image_map
            self._cached_bytes += size


#: A model-free map: (context, model, planned method, labels (B,h,w) Cityscapes ids, image ids, dataset
#: indices, map size (H, W)) → (B, H, W) maps, before the planned normalisation. Ids and indices are
#: None where the caller did not give them; a map that needs them gets them with `images_of`.
ModelFreeMaps = Callable[
    [
        EvaluationContext,
        LoadedModel,
        PlannedMethod,
        torch.Tensor,
        Sequence[str] | None,
        Sequence[int] | None,
        tuple[int, int],
    ],
    torch.Tensor,
]
#: Method name → its maps, for every planned method that is no attribution method: they are read from the
#: labels, the truth set or the causal referee, not from the model's weights. Filled on import by
#: `gradsum.evaluation.nulls` (priors) and `gradsum.evaluation.controls` (known-answer controls), which
#: import this module; importing the `gradsum.evaluation` package imports both.
MODEL_FREE_MAPS: Registry[ModelFreeMaps] = Registry("model-free map")
#: `context.cache` key of the evaluated images' id → index into the truth set (`image_indices`).
IMAGE_INDICES = "image_indices"


def image_indices(context: EvaluationContext) -> Mapping[str, int]:
    """Id → index into `context.truthset` of every evaluated image, found once per context.

    An id is a function of the sample's metadata (`sample_id`), so this reads every evaluated sample once;
    callers that have the indices at hand (every `batches()` loop) pass them to `maps` instead.
    """
    if IMAGE_INDICES not in context.cache:
        context.cache[IMAGE_INDICES] = {
            image: index
            for ids, _, chunk in context.sample_batches()
            for image, index in zip(ids, chunk, strict=True)
        }
    table: Mapping[str, int] = context.cache[IMAGE_INDICES]
    return table


def images_of(
    context: EvaluationContext, ids: Sequence[str] | None, indices: Sequence[int] | None, method: str
) -> tuple[list[str], list[int]]:
    """The batch's image ids and dataset indices, the one missing looked up from the other
    (`image_indices`); a model-free map of `method` that needs them and gets neither is an error."""
    if ids is not None and indices is not None:
        return list(ids), list(indices)
    if ids is not None:
        table = image_indices(context)
        missing = [image for image in ids if image not in table]
        if missing:
            raise GradSUMError(
                f"images {', '.join(missing[:3])} are not among the evaluated images (context.indices): "
                f"pass their indices to EvaluationContext.maps"
            )
        return list(ids), [table[image] for image in ids]
    if indices is not None:
        by_index = {index: image for image, index in image_indices(context).items()}
        return [by_index[index] for index in indices], list(indices)
    raise GradSUMError(
        f"model-free map {method!r} is read per image: call EvaluationContext.maps with the images' ids"
    )


def planned_maps(
    model: LoadedModel,
    method: PlannedMethod,
    batch: torch.Tensor,
    labels: torch.Tensor,
    target: str | None,
    module: nn.Module | None = None,
    *,
    context: EvaluationContext | None = None,
    ids: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
) -> torch.Tensor:
    """Maps of one planned method on `module` (default: the model's own), nulls and controls included.

    A model-free method (`MODEL_FREE_MAPS`) is read from `labels`, the `context`'s truth set and its causal
    referee, so it needs the context (and, for the per-image controls, the images' `ids` or `indices`);
    since no module enters it, asking for it on a `module` (a randomised copy) is an error.
    """
    from gradsum.attribution import attribute
    from gradsum.attribution.normalise import normalise

    if module is not None and method.model_free:
        raise GradSUMError(
            f"planned method {method.name!r} (role {method.role}) is model-free: its maps are no function "
            f"of a module, so they are not computed on a randomised copy; leave it out (`method.model_free`)"
        )
    size = (int(batch.shape[-2]), int(batch.shape[-1]))
    if method.method in MODEL_FREE_MAPS:
        if context is None:
            raise GradSUMError(
                f"planned method {method.name!r}: {method.method!r} is read from the truth set and the "
                f"causal referee, not the model; call EvaluationContext.maps"
            )
        compute = MODEL_FREE_MAPS.get(method.method)
        maps = compute(context, model, method, labels.to(batch.device), ids, indices, size)
        return normalise(maps.to(batch.device), method.normalisation)
    result = attribute(
        module if module is not None else model.module,
        batch,
        method.method,
        target=target,
        task=model.task,
        layer=method.layer,
        normalise=method.normalisation,
        postprocess=method.postprocess,
        **dict(method.options),
    )
    return result.maps


#: How a criterion's figure is resampled. `images`: the figure is the mean over images of the check's
#: per-image column (or a ratio of two such means), so the verdict draws image counts once per model and
#: scores every method and null on the same counts (a paired test). `models`: the figure is one value per
#: method across models (the shortcut check), decided by its permutation p over models (`{column}_p`).
IMAGES, MODELS = "images", "models"


@dataclass(frozen=True)
class Criterion:
    """One figure of a check that decides verdicts (`gradsum.evaluation.verdicts` takes the decision).

    For `over == IMAGES` the check's `per_image` table holds `column` (and `denominator`, when the figure
    is mean(column) / mean(denominator)) per model × method × image; the verdict recomputes the figure
    and its interval on bootstrap image counts drawn once per model. For `over == MODELS` the summary
    holds `column` and `{column}_p`.
    """

    check: str
    column: str
    higher_is_better: bool = True
    #: the value chance gives where no null explainer can stand for it (e.g. a normalised drop of 0)
    threshold: float | None = None
    text: str = ""
    #: the verdict's column stem in the trust table (default: the check's name)
    name: str = ""
    denominator: str | None = None
    #: whether the gating null explainers are a bar (False: the threshold alone is chance)
    against_nulls: bool = True
    over: str = IMAGES
    #: whether a pass is evidence that the map explains the model's causes (False for a check of model
    #: dependence alone, like sanity: a map can change with the weights and still point at the wrong
    #: pixels), so a recommendation can rest on it
    evidence: bool = True

    @property
    def key(self) -> str:
        """The stem of this criterion's verdict columns (`{key}_verdict`, `{key}_margin`, ...)."""
        return self.name or self.check


@dataclass
class CheckResult:
    """A check's tables (name → frame, written as `<name>.csv`) and its per model × method summary.

        `summary` has one row per model × method with the columns the check adds to the trust table
        (`model`, `method`, then check-specific columns); `criteria` name the columns that decide verdicts,
    which `gradsum.evaluation.verdicts` takes against the null explainers.
    """

    tables: dict[str, pd.DataFrame]
    summary: pd.DataFrame
    criteria: list[Criterion] = field(default_factory=list)
    #: model, method, image and each `IMAGES` criterion's per-image column(s) (NaN: undefined there)
    per_image: pd.DataFrame | None = None


#: Columns that are text in every check table that has them.
TEXT_COLUMNS = ("model", "method", "image", "class", "task", "domain")


def check_table(
    name: str,
    columns: Sequence[str],
    *,
    text: Sequence[str] = (),
    ints: Sequence[str] = (),
    bools: Sequence[str] = (),
) -> TableSchema:
    """A check table's schema from its columns in order: `TEXT_COLUMNS` and `text` are text, `ints` whole
    numbers, `bools` yes/no, every other column a real number."""
    dtypes = {
        **dict.fromkeys(ints, INT),
        **dict.fromkeys(bools, BOOL),
        **dict.fromkeys([*TEXT_COLUMNS, *text], TEXT),
    }
    unknown = sorted((set(text) | set(ints) | set(bools)) - set(columns))
    if unknown:
        raise ValueError(f"table {name}: typed column(s) {unknown} are not among its columns")
    return TableSchema(name, tuple((column, dtypes.get(column, FLOAT)) for column in columns))


@dataclass(frozen=True)
class NoOptions:
    """The options of a check that takes none: any option given is refused by name."""


class TrustCheck:
    """The base of every trust check: a name, a one-line description, its options and tables, and
    `evaluate(context, options)`.

    A check subclasses this, declares `Options` (a frozen dataclass whose defaults are the check's) and
    `tables` (the schemas of the tables it writes besides its summary), and registers itself with
    `@register_check(name)`. `run` builds the options once from the run config's
    `evaluation.options.<name>` (`dataspec.build`: an unknown or mistyped option names the field).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[Any]] = NoOptions
    tables: ClassVar[tuple[TableSchema, ...]] = ()

    def options(self, context: EvaluationContext) -> Any:
        """This check's options in `context`, built and validated."""
        return check_options(self.name, context.options.get(self.name, {}))

    def run(self, context: EvaluationContext) -> CheckResult:
        """The check's result on `context` with its options; a table it does not declare, or with other
        columns than it declares, is an error (the results contract holds for every check)."""
        result = self.evaluate(context, self.options(context))
        declared = {schema.name: schema for schema in self.tables}
        for name, frame in result.tables.items():
            if name not in declared:
                raise GradSUMError(
                    f"trust check {self.name!r} returned table {name!r}, which its `tables` do not declare; "
                    f"declared: {', '.join(declared) or 'none'}"
                )
            # a table with nothing to report may have no columns at all
            if len(frame.columns) and tuple(frame.columns) != declared[name].names:
                raise GradSUMError(
                    f"trust check {self.name!r}: table {name!r} has columns {list(frame.columns)}, "
                    f"declared {list(declared[name].names)}"
                )
        return result

    def evaluate(self, context: EvaluationContext, options: Any) -> CheckResult:
        """The check itself: tables (`tables`), summary, criteria and per-image rows."""
        raise NotImplementedError(f"trust check {self.name!r} defines no evaluate")

    def unavailable(self, truthset: TruthSet) -> str | None:
        """Why the check cannot run on `truthset` with its default options (None: it can). A check that
        needs what only some truth sets have (the shortcut check: a renderer that repaints the sky tint)
        says so here."""
        return None


CHECKS: Registry[type[TrustCheck]] = Registry("trust check")
C = TypeVar("C", bound=TrustCheck)


def register_check(name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: register a `TrustCheck` subclass as check `name` (which becomes its `name`)."""

    def add(cls: type[C]) -> type[C]:
        cls.name = name
        CHECKS.register(name)(cls)
        return cls

    return add


def check_options(name: str, options: Any) -> Any:
    """Check `name`'s `Options` built from a run config's `evaluation.options.<name>` mapping."""
    cls = CHECKS.get(name, "check")
    data = dict(options) if isinstance(options, Mapping) else options
    return build(cls.Options, data, f"evaluation.options.{name}")


def unavailable(name: str, truthset: TruthSet) -> str | None:
    """Why check `name` cannot run on `truthset` (None: it can); see `TrustCheck.unavailable`."""
    return CHECKS.get(name, "check")().unavailable(truthset)
