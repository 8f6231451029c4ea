"""The shortcut check: a test with a known answer for every attribution method (BAM-style).

The synthetic truth set plants a shortcut: in the train split the sky tint (warm = +1, cool = -1) agrees
with the steering sign with probability rho. Models trained at several rho from one spec form a series.
How strongly each model uses the tint is measured without any attribution:

- the pull: every evaluated image re-rendered with the opposite tint (`SyntheticTruthSet.flip_tint`,
  only sky pixels change), the output change signed towards the new tint's side;
- the errors on the tint splits (`test_agreeing`, `test_decorrelated`: the test scenes with the tint
  agreeing / disagreeing with the steering sign everywhere) and the R² the model would reach on its own
  training distribution (same scenes, tint drawn as in training).

Each method then has to find it: its mass share on the cue class (sky) should rise with the measured
pull across models (`shortcut_detection`, a Spearman correlation over models with an image-bootstrap
CI), and a model's sky mass should exceed that of its series' fair (rho 0) model (`detected`, paired per
image). Fine-tuned models (`gradsum finetune`) are set beside their base: how much of the decorrelated
R² gap to the fair model the fine-tuning recovered, and how the maps moved.
"""

from __future__ import annotations

import logging
import math
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import stats

from gradsum.aggregation.profiles import PER_IMAGE_COLUMNS, check_columns, mean_ci
from gradsum.errors import SpecError, TruthSetError
from gradsum.evaluation.agreement import rank_correlations
from gradsum.evaluation.base import CHECKS, MODELS, CheckResult, Criterion, EvaluationContext
from gradsum.evaluation.causal import gradsum_rows
from gradsum.models.loaded import LoadedModel
from gradsum.truthsets import TruthSet, open_truthset, truthset_kind
from gradsum.truthsets.base import Sample, sample_id
from gradsum.truthsets.labels import ClassTable
from gradsum.truthsets.synthetic.writer import AGREEING_SPLIT, DECORRELATED_SPLIT, TINT_SOURCE

log = logging.getLogger(__name__)

#: The only task whose models are measured: the tint is planted against the steering sign.
TASK = "steering"
#: Confidence level of every interval of the check (percentile bootstrap).
CONFIDENCE = 0.95
#: The regenerate hint of the refusals.
DECORRELATED_HINT = "render it with truthset.generate.decorrelated: true or `gradsum generate --decorrelated`"

MODELS_TABLE = "shortcut_models"
METHODS_TABLE = "shortcut_methods"
DETECTION_TABLE = "shortcut_detection"
ONSET_TABLE = "shortcut_onset"
FINETUNE_TABLE = "shortcut_finetune"
FINETUNE_METHODS_TABLE = "shortcut_finetune_methods"


def _with_ci(*names: str) -> tuple[str, ...]:
    return tuple(column for name in names for column in (name, f"{name}_ci_low", f"{name}_ci_high"))


#: Per model × evaluated image: the outputs on the image and on its tint flip (kept in the cache).
TINT_EFFECT_COLUMNS = (
    "model",
    "image",
    "tint_from",
    "tint_to",
    "output",
    "flipped_output",
    "pull",
    "abs_effect",
)
#: Per model × split × scene of `shortcut_predictions`: the steering target and the model's output.
PREDICTION_COLUMNS = ("model", "split", "index", "image", "target", "output")
#: Columns of `shortcut_models.csv`: one row per steering model.
MODEL_COLUMNS = (
    "model",
    "series",
    "rho",
    "finetuned",
    "base",
    *_with_ci("pull", "abs_effect"),
    "n_images",
    "r2_test",
    "mae_test",
    "r2_agreeing",
    "mae_agreeing",
    "r2_decorrelated",
    "mae_decorrelated",
    "r2_decorrelated_ci_low",
    "r2_decorrelated_ci_high",
    *_with_ci("r2_in_distribution"),
    "gap",
)
#: Columns of `shortcut_methods.csv`: one row per steering model × planned method.
METHOD_COLUMNS = (
    "model",
    "method",
    "null",
    "series",
    "rho",
    "finetuned",
    *_with_ci("cue_score", "cue_mass_share", "foreground_mass_share", "mass_diff_vs_fair"),
    "detected",
)
#: Columns of `shortcut_detection.csv`: one row per method.
DETECTION_COLUMNS = (
    "method",
    "null",
    "n_models",
    *_with_ci("spearman"),
    "p_value",
    "spearman_vs_rho",
)
#: Columns of `shortcut_onset.csv`: one row per method × series.
ONSET_COLUMNS = ("method", "null", "series", "first_rho", "rhos_detected")
#: The figures `shortcut_finetune.csv` sets before (the base) and after (the fine-tuned model).
FINETUNE_FIGURES = ("r2_decorrelated", "r2_in_distribution", "r2_test", "pull")
#: Columns of `shortcut_finetune.csv`: one row per fine-tuned steering model whose base is in the run.
FINETUNE_COLUMNS = (
    "model",
    "base",
    "seed",
    "rho",
    *(f"{figure}_{when}" for figure in FINETUNE_FIGURES for when in ("before", "after")),
    "gap_recovered",
)
#: The map figures `shortcut_finetune_methods.csv` sets before and after.
FINETUNE_METHOD_FIGURES = ("cue_mass_share", "foreground_mass_share")
#: Columns of `shortcut_finetune_methods.csv`: one row per fine-tuned model × method both models ran.
FINETUNE_METHOD_COLUMNS = (
    "model",
    "base",
    "method",
    *(f"{figure}_{when}" for figure in FINETUNE_METHOD_FIGURES for when in ("before", "after")),
)
#: Table name → its columns: every table the check writes.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    MODELS_TABLE: MODEL_COLUMNS,
    METHODS_TABLE: METHOD_COLUMNS,
    DETECTION_TABLE: DETECTION_COLUMNS,
    ONSET_TABLE: ONSET_COLUMNS,
    FINETUNE_TABLE: FINETUNE_COLUMNS,
    FINETUNE_METHODS_TABLE: FINETUNE_METHOD_COLUMNS,
}
#: Per model × method × image: the map's shares on the cue and the foreground, the cue's GradSUM score.
IMAGE_SHARE_COLUMNS = ("model", "method", "image", "cue_mass_share", "foreground_mass_share", "cue_score")

#: The verdict-deciding figure: does the method's cue mass follow the measured pull across models?
#: The claim is about models (does the mass follow the pull from model to model?), so the verdict reads
#: the permutation p over pairings of the models; the image-bootstrap CI is a secondary figure.
DETECTION_CRITERION = Criterion(
    "shortcut",
    "shortcut_detection",
    higher_is_better=True,
    over=MODELS,
    text="Spearman correlation over the steering models between the method's mean mass share on the "
    "shortcut cue (sky) and the measured pull of the tint (output change when only the sky tint flips), "
    "decided by its one-sided permutation p over pairings of the models (image-bootstrap CI beside it)",
)
#: Columns of the check's summary (the trust table's shortcut columns), in order.
SUMMARY_COLUMNS = (
    "model",
    "method",
    *_with_ci(DETECTION_CRITERION.column),
    f"{DETECTION_CRITERION.column}_p",
)


@runtime_checkable
class TintFlipping(Protocol):
    """A truth set whose renderer repaints the sky in the opposite tint (the synthetic one)."""

    def flip_tint(self, index: int) -> Sample: ...


@dataclass(frozen=True)
class ShortcutOptions:
    """The check's options (run config `evaluation.options.shortcut`)."""

    #: the class that carries the shortcut cue
    cue: str = "sky"
    #: the classes a method should look at instead (their mass shares are summed per image)
    foreground: tuple[str, ...] = ("road",)
    #: the tint split whose tint disagrees with the steering sign everywhere
    against: str = DECORRELATED_SPLIT
    #: the tint split whose tint agrees with the steering sign everywhere
    agreeing: str = AGREEING_SPLIT
    #: the first scenes of the tint splits the errors use (None: all)
    error_images: int | None = None

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> ShortcutOptions:
        """Options from a config mapping; unknown keys and a non-positive `error_images` are errors."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - valid)
        if unknown:
            raise SpecError(
                f"options.shortcut: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
            )
        values: dict[str, Any] = dict(options)
        if isinstance(values.get("foreground"), str):
            values["foreground"] = (values["foreground"],)
        if "foreground" in values:
            values["foreground"] = tuple(str(name) for name in values["foreground"])
        chosen = cls(**values)
        if chosen.error_images is not None and chosen.error_images < 1:
            raise SpecError(f"options.shortcut.error_images: need at least 1, got {chosen.error_images}")
        return chosen

    def check_classes(self, table: ClassTable) -> None:
        """Refuse a cue or foreground class the truth set does not have (its shares would read 0)."""
        unknown = [name for name in (self.cue, *self.foreground) if name not in table.by_name]
        if unknown:
            raise SpecError(
                f"options.shortcut: class(es) {', '.join(unknown)} not in the truth set; "
                f"valid: {', '.join(table.by_name)}"
            )


@dataclass(frozen=True)
class SeriesMember:
    """What a steering model's card says about its place in a series."""

    name: str
    series: str
    #: the shortcut strength of its training set (NaN: unknown)
    rho: float
    finetuned: bool
    #: the run's model it was fine-tuned from ("" when none is in the run)
    base: str
    #: the fine-tuning seed (NaN for a model trained from scratch)
    seed: float

    @property
    def agreement(self) -> float:
        """The probability that the tint agrees with the steering sign in its training distribution."""
        return self.rho if self.rho > 0 else 0.5 if self.rho == 0 else math.nan


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _card_rho(card: Mapping[str, Any]) -> float:
    """card["truthset"]["parameters"]["shortcut"]; NaN where the card records none."""
    value: Any = card
    for key in ("truthset", "parameters", "shortcut"):
        value = value.get(key) if isinstance(value, Mapping) else None
    return _number(value)


def series_members(models: Sequence[LoadedModel]) -> dict[str, SeriesMember]:
    """Model name → series, rho, fine-tuning and base of every steering model, from the cards."""
    by_checksum = {str(m.card["weights_sha256"]): m.name for m in models if m.card.get("weights_sha256")}
    described = {}
    for model in models:
        if model.task != TASK:
            continue
        finetune = model.card.get("finetune") or {}
        spec = model.card.get("spec") or {}
        described[model.name] = SeriesMember(
            name=model.name,
            series=str(spec.get("name", "")),
            rho=_card_rho(model.card),
            finetuned=bool(finetune),
            base=by_checksum.get(str(finetune.get("base_weights_sha256", "")), "") if finetune else "",
            seed=_number(finetune.get("seed")),
        )
    return described


def fair_models(described: Mapping[str, SeriesMember]) -> dict[str, str | None]:
    """Series → its fair model: the one trained from scratch at rho 0 (the first, if several; None: none)."""
    fairs: dict[str, str | None] = {}
    for series in dict.fromkeys(m.series for m in described.values()):
        fair = [m.name for m in described.values() if m.series == series and not m.finetuned and m.rho == 0]
        if len(fair) > 1:
            log.warning(
                "shortcut: series %s has several rho-0 models %s; %s is its fair model", series, fair, fair[0]
            )
        fairs[series] = fair[0] if fair else None
    return fairs


def _rng(seed: int, *key: str) -> np.random.Generator:
    """A generator of its own per figure, so adding a model or method changes no other interval."""
    return np.random.default_rng([seed, zlib.crc32("\0".join(key).encode())])


def _steering(context: EvaluationContext) -> list[LoadedModel]:
    return [m for m in context.models if m.task == TASK]


def _predict(context: EvaluationContext, model: LoadedModel, images: Sequence[np.ndarray]) -> np.ndarray:
    return model.predict(context.model_input(model, images)).cpu().numpy().astype(np.float64)


def tint_flipper(truthset: TruthSet) -> TintFlipping:
    """`truthset` when it can repaint the sky tint; else a `TruthSetError` naming its root."""
    if not isinstance(truthset, TintFlipping):
        raise TruthSetError(
            f"{truthset.root}: the shortcut check needs a synthetic truth set (whose renderer can repaint "
            f"the sky tint); this {truthset.kind} truth set has no flip_tint"
        )
    return truthset


def tint_split(truthset: TruthSet, split: str) -> TruthSet:
    """Split `split` of the truth set's folder; a set rendered without it is refused with the fix."""
    root = truthset.root
    if split not in truthset_kind(root, truthset.kind).splits(root, None):
        raise TruthSetError(
            f"{root}: no split {split!r}, which the shortcut check reads; {DECORRELATED_HINT}"
        )
    return open_truthset(root, split, kind=truthset.kind)


def tint_effects(context: EvaluationContext) -> pd.DataFrame:
    """Per steering model × evaluated image: the output on the image and on its tint flip.

    Each image is re-rendered once and read by every model. `pull` = (f(flip) − f(x))·(to − from)/2 is
    positive when the output moves towards the new tint's side (warm = right = positive steering).
    """
    flipper = tint_flipper(context.truthset)
    models = _steering(context)
    rows: list[dict[str, object]] = []
    for ids, samples, indices in context.sample_batches():
        flipped = [flipper.flip_tint(index) for index in indices]
        tints = [(int(s.meta["flip_tint"]["from"]), int(s.meta["flip_tint"]["to"])) for s in flipped]
        for model in models:
            before = _predict(context, model, [s.image for s in samples])
            after = _predict(context, model, [s.image for s in flipped])
            for image, (old_tint, new_tint), old, new in zip(ids, tints, before, after, strict=True):
                rows.append(
                    {
                        "model": model.name,
                        "image": image,
                        "tint_from": old_tint,
                        "tint_to": new_tint,
                        "output": old,
                        "flipped_output": new,
                        "pull": (new - old) * (new_tint - old_tint) / 2,
                        "abs_effect": abs(new - old),
                    }
                )
    return pd.DataFrame(rows, columns=list(TINT_EFFECT_COLUMNS))


def error_splits(options: ShortcutOptions) -> tuple[str, str, str]:
    """The splits whose errors the check reads: against, agreeing and the tint splits' source (test)."""
    return options.against, options.agreeing, TINT_SOURCE


def shortcut_predictions(context: EvaluationContext, options: ShortcutOptions) -> pd.DataFrame:
    """Every steering model's outputs on the first N scenes of the tint splits and of their source split.

    N is `options.error_images` (default: all), capped by the splits' sizes. Each split is read once, in
    batches of the context's batch size, and every model reads each batch; the frame is kept in
    `context.cache` for the checks that follow.
    """
    splits = {name: tint_split(context.truthset, name) for name in error_splits(options)}
    count = min(len(split) for split in splits.values())
    if options.error_images is not None:
        count = min(count, options.error_images)
    key = f"shortcut_predictions:{':'.join(splits)}:{count}"
    if key not in context.cache:
        frames = [_split_predictions(context, name, split, count) for name, split in splits.items()]
        context.cache[key] = pd.concat(frames, ignore_index=True)
    cached: pd.DataFrame = context.cache[key]
    return cached


def _split_predictions(context: EvaluationContext, name: str, split: TruthSet, count: int) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    models = _steering(context)
    for start in range(0, count, context.batch_size):
        chunk = list(range(start, min(start + context.batch_size, count)))
        samples = [split[i] for i in chunk]
        images = [s.image for s in samples]
        for model in models:
            outputs = _predict(context, model, images)
            for index, sample, output in zip(chunk, samples, outputs, strict=True):
                rows.append(
                    {
                        "model": model.name,
                        "split": name,
                        "index": index,
                        "image": sample_id(sample.meta, index),
                        "target": float(sample.targets[TASK]),
                        "output": output,
                    }
                )
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


def _r2(targets: np.ndarray, squared_errors: np.ndarray) -> float:
    """1 − MSE / Var(targets) (population variance); NaN without variance."""
    variance = float(targets.var()) if targets.size else 0.0
    return 1.0 - float(squared_errors.mean()) / variance if variance > 0 else math.nan


def _interval(point: float, resampled: np.ndarray) -> tuple[float, float]:
    """Percentile interval of the finite resampled values; NaN where the point or all resamples are."""
    finite = resampled[np.isfinite(resampled)]
    if not math.isfinite(point) or finite.size == 0:
        return math.nan, math.nan
    tail = 50 * (1 - CONFIDENCE)
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def split_errors(
    predictions: pd.DataFrame,
    model: SeriesMember,
    options: ShortcutOptions,
    n_resamples: int,
    seed: int,
) -> dict[str, float]:
    """R² and MAE of one model on the error splits, and its R² on its own training distribution.

    r2_in_distribution = 1 − (p·MSE_agreeing + (1−p)·MSE_decorrelated) / Var(steering), p the model's
    agreement probability: the same scenes with the tint drawn as in training. The intervals resample
    the scenes (the same draws for the decorrelated and the in-distribution R²).
    """
    against, agreeing, source = error_splits(options)
    own = predictions[predictions["model"] == model.name]

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        rows = own[own["split"] == name].sort_values("index")
        return rows["target"].to_numpy(float), rows["output"].to_numpy(float)

    figures: dict[str, float] = {}
    squared: dict[str, np.ndarray] = {}
    for name, column in ((source, "test"), (agreeing, "agreeing"), (against, "decorrelated")):
        targets, outputs = split(name)
        squared[column] = (outputs - targets) ** 2
        figures[f"r2_{column}"] = _r2(targets, squared[column])
        figures[f"mae_{column}"] = float(np.abs(outputs - targets).mean()) if targets.size else math.nan
    targets = split(against)[0]
    p = model.agreement
    mixed = p * squared["agreeing"] + (1 - p) * squared["decorrelated"]
    figures["r2_in_distribution"] = _r2(targets, mixed)
    draws = _rng(seed, model.name, "errors").integers(
        0, max(targets.size, 1), size=(n_resamples, targets.size)
    )
    variance = targets[draws].var(axis=1) if targets.size else np.zeros(n_resamples)
    with np.errstate(divide="ignore", invalid="ignore"):
        valid = variance > 0
        resampled_against = np.where(
            valid, 1 - squared["decorrelated"][draws].mean(axis=1) / variance, np.nan
        )
        resampled_mixed = np.where(valid, 1 - mixed[draws].mean(axis=1) / variance, np.nan)
    for column, resampled in (
        ("r2_decorrelated", resampled_against),
        ("r2_in_distribution", resampled_mixed),
    ):
        figures[f"{column}_ci_low"], figures[f"{column}_ci_high"] = _interval(figures[column], resampled)
    figures["gap"] = figures["r2_agreeing"] - figures["r2_decorrelated"]
    return figures


def model_table(
    effects: pd.DataFrame,
    predictions: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    options: ShortcutOptions,
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_models`: per steering model, the tint's pull and the errors on the tint splits."""
    check_columns(effects, TINT_EFFECT_COLUMNS, "tint effects")
    check_columns(predictions, PREDICTION_COLUMNS, "shortcut predictions")
    rows = []
    for model in described.values():
        own = effects[effects["model"] == model.name]
        row: dict[str, object] = {
            "model": model.name,
            "series": model.series,
            "rho": model.rho,
            "finetuned": model.finetuned,
            "base": model.base,
            "n_images": int(own["image"].nunique()),
        }
        for figure in ("pull", "abs_effect"):
            interval = mean_ci(
                own[figure].to_numpy(float), _rng(seed, model.name, figure), n_resamples, CONFIDENCE
            )
            row.update(dict(zip(_with_ci(figure), interval, strict=True)))
        row.update(split_errors(predictions, model, options, n_resamples, seed))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(MODEL_COLUMNS))


def image_shares(rows: pd.DataFrame, options: ShortcutOptions) -> pd.DataFrame:
    """Per model × method × image of GradSUM per-image rows: the mass shares on the cue and on the
    foreground classes (0 where absent, NaN for an all-zero map) and the cue's score (NaN where absent)."""
    check_columns(rows, PER_IMAGE_COLUMNS, "gradsum rows")
    cue = rows["class"] == options.cue
    foreground = rows["class"].isin(list(options.foreground))
    # 0·share keeps an all-zero map's NaN shares NaN where the class is absent
    nothing = 0.0 * rows["mass_share"]
    parts = pd.DataFrame(
        {
            "model": rows["model"],
            "method": rows["method"],
            "image": rows["image"],
            "cue_mass_share": rows["mass_share"].where(cue, nothing),
            "foreground_mass_share": rows["mass_share"].where(foreground, nothing),
            "cue_score": rows["score"].where(cue),
        }
    )
    shares = parts.groupby(["model", "method", "image"], sort=True).sum(min_count=1).reset_index()
    return shares[list(IMAGE_SHARE_COLUMNS)]


def _paired_difference(shares: pd.DataFrame, model: str, fair: str | None, method: str) -> np.ndarray:
    """Per image shared with the fair model: cue mass share of `model` minus the fair model's."""
    if fair is None or fair == model:
        return np.array([], dtype=float)
    method_rows = shares[shares["method"] == method]
    own = method_rows[method_rows["model"] == model].set_index("image")["cue_mass_share"]
    reference = method_rows[method_rows["model"] == fair].set_index("image")["cue_mass_share"]
    common = own.index.intersection(reference.index)
    return (own[common] - reference[common]).to_numpy(float)


def method_table(
    shares: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    nulls: Mapping[str, bool],
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_methods`: per steering model × method, its cue and foreground mass, and the paired cue
    mass difference against the series' fair model (`detected` when that interval lies above 0)."""
    check_columns(shares, IMAGE_SHARE_COLUMNS, "image shares")
    fairs = fair_models(described)
    rows = []
    for (model, method), group in shares.groupby(["model", "method"], sort=True):
        if model not in described:
            continue
        info = described[str(model)]
        row: dict[str, object] = {
            "model": model,
            "method": method,
            "null": nulls.get(str(method), False),
            "series": info.series,
            "rho": info.rho,
            "finetuned": info.finetuned,
        }
        values = {
            figure: group[figure].to_numpy(float)
            for figure in ("cue_score", "cue_mass_share", "foreground_mass_share")
        }
        values["mass_diff_vs_fair"] = _paired_difference(shares, str(model), fairs[info.series], str(method))
        for figure, figure_values in values.items():
            rng = _rng(seed, str(model), str(method), figure)
            row.update(
                dict(zip(_with_ci(figure), mean_ci(figure_values, rng, n_resamples, CONFIDENCE), strict=True))
            )
        low = _number(row["mass_diff_vs_fair_ci_low"])
        row["detected"] = bool(math.isfinite(low) and low > 0)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(METHOD_COLUMNS))


def _rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman of two per-model vectors; NaN for fewer than 3 models or a constant vector."""
    if x.size < 3:
        return math.nan
    return float(rank_correlations(x, y)[0])


def _detection_row(
    method: str,
    null: bool,
    mass: pd.DataFrame,
    pull: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    n_resamples: int,
    seed: int,
) -> dict[str, object]:
    """One method's detection figures from images × models matrices of cue mass share and pull."""
    models = [str(m) for m in mass.columns if m in pull.columns]
    images = mass.index.intersection(pull.index)
    mass_values = mass.loc[images, models].to_numpy(float)
    pull_values = pull.loc[images, models].to_numpy(float)
    # the resamples draw whole images, so every model's mass and pull come from the same images
    kept = np.isfinite(mass_values).all(axis=1) & np.isfinite(pull_values).all(axis=1)
    mass_values, pull_values = mass_values[kept], pull_values[kept]
    row: dict[str, object] = {"method": method, "null": null, "n_models": len(models)}
    row.update(dict.fromkeys(DETECTION_COLUMNS[3:], math.nan))
    if not kept.any():
        return row
    mass_means, pull_means = mass_values.mean(axis=0), pull_values.mean(axis=0)
    trained = [
        i for i, m in enumerate(models) if not described[m].finetuned and math.isfinite(described[m].rho)
    ]
    rhos = np.array([described[models[i]].rho for i in trained], dtype=float)
    row["spearman_vs_rho"] = _rank_correlation(mass_means[trained], rhos)
    spearman = _rank_correlation(mass_means, pull_means)
    if not math.isfinite(spearman):
        return row
    n_images = mass_values.shape[0]
    counts = _rng(seed, method, "detection").multinomial(
        n_images, np.full(n_images, 1.0 / n_images), size=n_resamples
    )
    resampled = rank_correlations((counts @ mass_values) / n_images, (counts @ pull_values) / n_images)[0]
    row["spearman"] = spearman
    row["spearman_ci_low"], row["spearman_ci_high"] = _interval(spearman, np.asarray(resampled, dtype=float))
    row["p_value"] = permutation_p_value(mass_means, pull_means, _rng(seed, method, "permutation"))
    return row


#: Pairings drawn for the permutation p-value; with up to 7 models every pairing is enumerated (exact).
PERMUTATIONS = 9999


def permutation_p_value(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> float:
    """One-sided (greater) permutation p-value of Spearman ρ over re-pairings of the models.

    A handful of models is the usual case here, where the t approximation scipy's `spearmanr` uses is
    far off (4 models in perfect order: p 0 instead of the exact 1/24).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns about ties, which its ranks handle
        result = stats.permutation_test(
            (x, y),
            lambda a, b: stats.spearmanr(a, b).statistic,
            permutation_type="pairings",
            alternative="greater",
            n_resamples=PERMUTATIONS,
            rng=rng,
        )
    return float(result.pvalue)


def detection_table(
    shares: pd.DataFrame,
    effects: pd.DataFrame,
    described: Mapping[str, SeriesMember],
    nulls: Mapping[str, bool],
    n_resamples: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """`shortcut_detection`: per method, Spearman over the steering models it ran on between the mean
    cue mass share and the measured pull (fine-tuned models included), with an image-bootstrap CI and a
    one-sided p-value; and Spearman against rho over the models trained from scratch."""
    check_columns(shares, IMAGE_SHARE_COLUMNS, "image shares")
    check_columns(effects, TINT_EFFECT_COLUMNS, "tint effects")
    pull = effects[effects["model"].isin(list(described))].pivot_table(
        index="image", columns="model", values="pull", aggfunc="mean"
    )
    rows = []
    for method, group in shares[shares["model"].isin(list(described))].groupby("method", sort=True):
        mass = group.pivot_table(index="image", columns="model", values="cue_mass_share", aggfunc="mean")
        rows.append(
            _detection_row(
                str(method), nulls.get(str(method), False), mass, pull, described, n_resamples, seed
            )
        )
    return pd.DataFrame(rows, columns=list(DETECTION_COLUMNS))


def _rho_text(rho: float) -> str:
    return format(rho, "g")


def onset_table(methods: pd.DataFrame) -> pd.DataFrame:
    """`shortcut_onset`: per method × series, the smallest rho > 0 at which a model trained from scratch
    has its cue mass detected above the fair model's, and every such rho."""
    check_columns(methods, METHOD_COLUMNS, METHODS_TABLE)
    rows = []
    for (method, series), group in methods.groupby(["method", "series"], sort=True):
        hits = group[~group["finetuned"].astype(bool) & (group["rho"] > 0) & group["detected"].astype(bool)]
        rhos = sorted(set(hits["rho"].astype(float)))
        rows.append(
            {
                "method": method,
                "null": bool(group["null"].iloc[0]),
                "series": series,
                "first_rho": rhos[0] if rhos else math.nan,
                "rhos_detected": ",".join(_rho_text(rho) for rho in rhos),
            }
        )
    return pd.DataFrame(rows, columns=list(ONSET_COLUMNS))


def _gap_recovered(before: float, after: float, clean: float) -> float:
    """(after − before) / (clean − before): the share of the gap to the fair model closed; NaN without one."""
    if not (math.isfinite(clean) and math.isfinite(before) and clean > before):
        return math.nan
    return (after - before) / (clean - before)


def finetune_table(models: pd.DataFrame, described: Mapping[str, SeriesMember]) -> pd.DataFrame:
    """`shortcut_finetune`: per fine-tuned steering model whose base is in the run, its figures beside
    the base's and the share of the decorrelated R² gap to the series' fair model it recovered."""
    check_columns(models, MODEL_COLUMNS, MODELS_TABLE)
    table = models.set_index("model")
    fairs = fair_models(described)
    rows = []
    for info in described.values():
        if not info.finetuned or info.base not in table.index or info.name not in table.index:
            continue
        before, after = table.loc[info.base], table.loc[info.name]
        row: dict[str, object] = {"model": info.name, "base": info.base, "seed": info.seed, "rho": info.rho}
        for figure in FINETUNE_FIGURES:
            row[f"{figure}_before"], row[f"{figure}_after"] = before[figure], after[figure]
        fair = fairs[info.series]
        clean = float(table.loc[fair, "r2_decorrelated"]) if fair in table.index else math.nan
        row["gap_recovered"] = _gap_recovered(
            float(before["r2_decorrelated"]), float(after["r2_decorrelated"]), clean
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FINETUNE_COLUMNS))


def finetune_method_table(methods: pd.DataFrame, described: Mapping[str, SeriesMember]) -> pd.DataFrame:
    """`shortcut_finetune_methods`: per fine-tuned model × method both it and its base ran, the cue and
    foreground mass shares before and after."""
    check_columns(methods, METHOD_COLUMNS, METHODS_TABLE)
    table = methods.set_index(["model", "method"])
    rows = []
    for info in described.values():
        if not info.finetuned or not info.base:
            continue
        for method in methods.loc[methods["model"] == info.name, "method"]:
            if (info.base, method) not in table.index:
                continue
            before, after = table.loc[(info.base, method)], table.loc[(info.name, method)]
            row: dict[str, object] = {"model": info.name, "base": info.base, "method": method}
            for figure in FINETUNE_METHOD_FIGURES:
                row[f"{figure}_before"], row[f"{figure}_after"] = before[figure], after[figure]
            rows.append(row)
    return pd.DataFrame(rows, columns=list(FINETUNE_METHOD_COLUMNS))


def summary_table(methods: pd.DataFrame, detection: pd.DataFrame) -> pd.DataFrame:
    """Per steering model × method: the method's detection Spearman and interval, as verdicts read it."""
    names = [*_with_ci("spearman"), "p_value"]
    figures = detection.rename(columns=dict(zip(names, SUMMARY_COLUMNS[2:], strict=True)))
    merged = methods[["model", "method"]].merge(figures, on="method", how="left")
    return merged[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def _null_labels(context: EvaluationContext, models: Sequence[LoadedModel]) -> dict[str, bool]:
    return {p.label: p.null for m in models for p in context.plan.get(m.name, ())}


def _method_shares(
    context: EvaluationContext, options: ShortcutOptions, models: Sequence[LoadedModel]
) -> pd.DataFrame:
    """Per-image cue and foreground shares of every planned method on the steering models."""
    if not any(context.plan.get(m.name) for m in context.models):
        return pd.DataFrame(columns=list(IMAGE_SHARE_COLUMNS))
    rows = gradsum_rows(context)
    return image_shares(rows[rows["model"].isin([m.name for m in models])], options)


class ShortcutCheck:
    """The tint's measured pull on every steering model, and whether each method's cue mass follows it."""

    name = DETECTION_CRITERION.check
    description = (
        "flip the sky tint (the planted shortcut) and measure each model's pull and tint-split errors; "
        "rank-correlate each method's sky mass with the pull across models"
    )

    def unavailable(self, truthset: TruthSet) -> str | None:
        """Why the check cannot run on `truthset` with its default options (None: it can)."""
        try:
            tint_flipper(truthset)
            for split in error_splits(ShortcutOptions()):
                tint_split(truthset, split)
        except TruthSetError as error:
            return str(error)
        return None

    def run(self, context: EvaluationContext) -> CheckResult:
        """Tables shortcut_models, _methods, _detection, _onset, _finetune, _finetune_methods; summary."""
        options = ShortcutOptions.from_mapping(context.options.get(self.name, {}))
        options.check_classes(context.truthset.class_table)
        # refused before any work: a set that cannot repaint the tint, or lacks the tint splits
        tint_flipper(context.truthset)
        for split in error_splits(options):
            tint_split(context.truthset, split)
        models = _steering(context)
        if not models:
            log.warning("shortcut: no steering model in the run; no figures, no verdicts")
            return CheckResult(
                tables={name: pd.DataFrame(columns=list(columns)) for name, columns in TABLE_COLUMNS.items()},
                summary=pd.DataFrame(columns=list(SUMMARY_COLUMNS)),
            )
        predictions = shortcut_predictions(context, options)
        effects = tint_effects(context)
        described = series_members(context.models)
        nulls = _null_labels(context, models)
        shares = _method_shares(context, options, models)
        model_figures = model_table(
            effects, predictions, described, options, context.n_resamples, context.seed
        )
        methods = method_table(shares, described, nulls, context.n_resamples, context.seed)
        detection = detection_table(shares, effects, described, nulls, context.n_resamples, context.seed)
        summary = summary_table(methods, detection)
        return CheckResult(
            tables={
                MODELS_TABLE: model_figures,
                METHODS_TABLE: methods,
                DETECTION_TABLE: detection,
                ONSET_TABLE: onset_table(methods),
                FINETUNE_TABLE: finetune_table(model_figures, described),
                FINETUNE_METHODS_TABLE: finetune_method_table(methods, described),
            },
            summary=summary,
            criteria=[DETECTION_CRITERION] if not summary.empty else [],
        )


CHECKS.add(ShortcutCheck.name, ShortcutCheck)
