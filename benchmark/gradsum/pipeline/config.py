"""Run configuration: which truth set, models, methods, targets, normalisation and resolution.

A config is a YAML file whose fields mirror the dataclasses below; unknown or mistyped fields are
refused with a message naming the file and the field. Example configs ship in `gradsum/configs/`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gradsum.aggregation.profiles import PROFILE_STATISTICS
from gradsum.attribution.normalise import DEFAULT_NORMALISER
from gradsum.attribution.precision import DEFAULT_PRECISION
from gradsum.dataspec import build, load_yaml, shipped
from gradsum.errors import GradSUMError, SpecError
from gradsum.evaluation.planned import PlannedMethod
from gradsum.finetune.settings import FinetuneSettings
from gradsum.names import check_model_name
from gradsum.registry import Registry
from gradsum.taxonomy import DEFAULT_TARGETS
from gradsum.truthsets.synthetic.writer import DEFAULT_COUNT


@dataclass(frozen=True)
class GenerateConfig:
    """How to render the synthetic truth set when it is missing."""

    count: int = DEFAULT_COUNT
    seed: int = 0
    size: tuple[int, int] = (96, 192)
    shortcut: float = 0.0
    #: also render the tint splits (test_decorrelated, test_agreeing) that measure a shortcut's pull
    decorrelated: bool = False
    #: the difficulty ladder: `KNOB=LEVEL` entries (levels 0-3, `gradsum generate --difficulty`); empty: clean
    difficulty: tuple[str, ...] = ()
    #: knobs whose level each train and val scene draws for itself (0-3, `gradsum generate --mix`): a model
    #: trained on it meets every level; test stays as `difficulty` says
    mix: tuple[str, ...] = ()
    #: render only these splits (`gradsum generate --only`); empty: all
    only: tuple[str, ...] = ()


@dataclass(frozen=True)
class TruthSetConfig:
    """Where the truth set lives and which split is attributed."""

    path: str = "datasets/synthetic"
    #: the split to attribute (None: the kind's default, one with labels: `val` for Cityscapes)
    split: str | None = "test"
    #: attribute at most this many images of the split (None: all)
    limit: int | None = None
    #: reader kind (None: detected from the folder)
    kind: str | None = None
    #: plug-in spec for a folder without its own: a built-in name (`gradsum truthsets`) or a spec file
    spec: str | None = None
    #: render the synthetic set with these settings when `path` does not exist
    generate: GenerateConfig | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise SpecError(f"truthset.limit (--limit): must be 1 or more, got {self.limit}")


@dataclass(frozen=True)
class TrainingSetConfig:
    """The truth set a model is trained on, rendered when missing as the run's truth set is."""

    path: str
    #: render the synthetic set with these settings when `path` does not exist
    generate: GenerateConfig | None = None


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(FinetuneSettings):
    """A relevance-guided fine-tune of another model of the run: its `FinetuneSettings` and its base."""

    #: the model entry fine-tuned: another entry of the config, listed before this one
    base: str

    @property
    def settings(self) -> FinetuneSettings:
        """The fine-tuning settings alone (what `finetune_model` takes and the card records)."""
        return FinetuneSettings(**{f.name: getattr(self, f.name) for f in fields(FinetuneSettings)})


@dataclass(frozen=True)
class CompressConfig:
    """A compressed copy of another model of the run (`gradsum.models.compression`), made when missing."""

    #: the model entry compressed: another entry of the config, listed before this one
    base: str
    #: the compression (`gradsum compress --help`): magnitude, channels, int8_dynamic
    method: str
    #: its strength (magnitude: the sparsity; channels: the share of each conv's channels zeroed);
    #: None for a method without one (int8_dynamic)
    level: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    """One model: a checkpoint folder, trained from `spec` (or fine-tuned from another model) when it does
    not exist yet."""

    name: str
    spec: str | None = None
    #: checkpoint folder (default: `<models_dir>/<name>`)
    checkpoint: str | None = None
    #: overrides deep-merged into the spec before training (e.g. `{train: {epochs: 2}}`)
    overrides: dict[str, Any] = field(default_factory=dict)
    #: the truth set `spec` is trained on (None: the run's truth set)
    train_on: TrainingSetConfig | None = None
    #: fine-tune another model of the run instead of training from `spec`
    finetune: FinetuneConfig | None = None
    #: compress another model of the run instead of training from `spec`
    compress: CompressConfig | None = None


#: The trust checks `gradsum run` runs by default: fast enough for the default run's budget.
DEFAULT_CHECKS = ("causal", "sanity", "localisation", "breakdown")


@dataclass(frozen=True)
class EvaluationConfig:
    """The trust layer: which checks run, on how many images of the split, with which options."""

    #: check names (see `gradsum evaluate --help`); an empty list turns the trust layer off
    checks: tuple[str, ...] = DEFAULT_CHECKS
    #: the first this many images of the split are evaluated (every check sees the same images)
    images: int = 200
    #: run the null explainers (random, uniform, Sobel, class-area and positional priors) beside every method
    nulls: bool = True
    #: run the known-answer controls (the causal oracle, oracles for another model, task or image, the
    #: cause mask) beside every method: they show on each model what a check can and cannot tell
    controls: bool = True
    #: per-check options, e.g. {sanity: {blocks: 3}, causal: {filler: inpaint}}
    options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "sanity": {"blocks": 3, "images": 64, "similarities": ["spearman_abs", "spearman"]}
        }
    )
    bootstrap_resamples: int = 1000
    #: models that get a twin trained on permuted labels (`<name>_shuffled`) for data randomisation
    shuffled_labels: tuple[str, ...] = ()
    #: models that get a twin trained with the spec's training seed + 1 (`<name>_seed1`): the ceiling of
    #: the sanity check's drop (how much a map changes when the model is merely retrained)
    seed_twins: tuple[str, ...] = ()


@dataclass(frozen=True)
class DegradationConfig:
    """One level of the label-quality study: a label degradation (`gradsum.truthsets.degrade`) and its
    parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PseudoLabelConfig:
    """The study's pseudo-label levels: one segmenter per training budget, each trained on the run's
    truth set (its train split, held out on val) when its folder does not exist yet."""

    architecture: str = "lraspp_mobilenet_v3_large"
    #: training steps of each segmenter: one level per budget, so the labels' mIoU spans a range
    budgets: tuple[int, ...] = (15, 40, 120, 400)
    batch_size: int = 16
    #: where the segmenters live: `<folder>/<architecture>_<steps>steps`
    folder: str = "models/segmenters"
    #: predicted pixels below this confidence become void (0: every pixel keeps the segmenter's class)
    threshold: float = 0.0
    #: how frames reach the segmenter (`gradsum.labelling.INFERENCE_MODES`)
    mode: str = "resize"
    seed: int = 0


@dataclass(frozen=True)
class LabelStudyConfig:
    """The label-quality study (`labels` config): the run's profiles and verdicts recomputed on the
    evaluated images under degraded and predicted labels, against the exact labels."""

    degradations: tuple[DegradationConfig, ...] = ()
    pseudo: PseudoLabelConfig | None = None
    #: rerun the run's trust checks under each level's labels and compare every verdict
    verdicts: bool = True
    #: a profile agrees with the exact-label one while its Spearman CI's lower bound is at least this
    agreement: float = 0.9


@dataclass(frozen=True)
class CompressionStudyConfig:
    """The compression study (`compression` config): each `compress:` model of the run set against its parent
    on the same images. The thresholds decide what counts as shown and are fixed before any result is seen;
    they are never tuned to a run's figures."""

    #: a profile has drifted once its Spearman CI against the parent's lies wholly below this floor
    spearman_floor: float = 0.9
    #: ... or once a class's paired per-image `statistic` change has its CI wholly outside ±this
    shift_tolerance: float = 0.05
    statistic: str = "mass_share"
    #: the task metric (the task's headline: R², accuracy) has dropped once the drop's CI lies wholly above this
    metric_tolerance: float = 0.02
    #: the split of each parent's training set on which both models' task metric is measured
    metric_split: str = "test"


@dataclass(frozen=True)
class RunConfig:
    """Everything one `gradsum run` needs; the same config gives the same tables."""

    name: str = "default"
    #: the sha256 of the leaderboard protocol this run executes (`gradsum.leaderboard`); "" for any other run
    protocol: str = ""
    truthset: TruthSetConfig = field(default_factory=TruthSetConfig)
    models: tuple[ModelConfig, ...] = ()
    methods: tuple[PlannedMethod, ...] = ()
    #: attribution target per task (see `gradsum methods`; steering: output|negative|direction)
    targets: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    normalise: str = DEFAULT_NORMALISER
    #: the attribution stage's precision: fp32, or a half-precision autocast (bf16; fp16 on CUDA only);
    #: the trust checks compute their own maps in fp32 (see gradsum.attribution.precision)
    precision: str = DEFAULT_PRECISION
    resolution: str = "label"
    batch_size: int = 32
    #: images per shard: the unit a killed run resumes from and processes of a distributed run share
    shard_size: int = 256
    #: DataLoader processes decoding frames while the models run (0: decode in the main process)
    workers: int = 1
    seed: int = 0
    bootstrap_resamples: int = 2000
    #: samples shown in the overlay grid
    overlays: int = 4
    #: per-layer attention entropy and raw-attention profiles for ViTs
    attention_diagnostics: bool = True
    #: the trust layer's checks (causal erasure, sanity, perturbation, localisation, granularity)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    #: the label-quality study, run on the evaluated images after the trust checks (None: not run)
    labels: LabelStudyConfig | None = None
    #: the compression study, run after the trust checks on the attributed images (None: not run)
    compression: CompressionStudyConfig | None = None
    models_dir: str = "models"
    results_dir: str = "results"
    device: str | None = None


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> RunConfig:
    """A validated `RunConfig` from a plain mapping; errors name `source` and the field."""
    config = build(RunConfig, data, source)
    for name, low in (("batch_size", 1), ("shard_size", 1), ("workers", 0)):
        if getattr(config, name) < low:
            raise SpecError(f"{source}.{name}: must be {low} or more, got {getattr(config, name)}")
    names = [m.name for m in config.models]
    if len(names) != len(set(names)):
        raise SpecError(f"{source}.models: model names must be unique, got {names}")
    for name in names:
        check_model_name(name, f"{source}.models")
    for index, entry in enumerate(config.models):
        if entry.finetune is not None:
            check_finetune(entry, entry.finetune, names[:index], f"{source}.models[{entry.name}]")
        if entry.compress is not None:
            check_compress(entry, entry.compress, names[:index], f"{source}.models[{entry.name}]")
    _check_difficulty(config.truthset.generate, f"{source}.truthset.generate")
    for entry in config.models:
        if entry.train_on is not None:
            _check_difficulty(entry.train_on.generate, f"{source}.models[{entry.name}].train_on.generate")
    _check_twins(config, source, "shuffled_labels", "shuffled-label twin")
    # a seed twin overrides the spec's training seed, so it needs a spec even where its folder exists
    _check_twins(config, source, "seed_twins", "seed twin", needs_spec=True)
    if config.labels is not None:
        check_label_study(config, f"{source}.labels")
    if config.compression is not None:
        check_compression_study(config, f"{source}.compression")
    for i, method in enumerate(config.methods):
        for model in method.models or ():
            if model not in names:
                raise SpecError(
                    f"{source}.methods[{i}].models: unknown model {model!r}; valid: {', '.join(names)}"
                )
    return config


def _check_difficulty(settings: GenerateConfig | None, where: str) -> None:
    """Refuse (naming the field of generate block `where`) a difficulty naming an unknown knob or a level
    outside 0-3, a mix naming an unknown knob or one twice, or an unknown split to render."""
    if settings is None:
        return
    from gradsum.truthsets.synthetic import parse_difficulty
    from gradsum.truthsets.synthetic.writer import check_mix, check_only

    checks: tuple[tuple[str, Callable[[], object]], ...] = (
        ("difficulty", lambda: parse_difficulty(settings.difficulty)),
        ("mix", lambda: check_mix(settings.mix)),
        ("only", lambda: check_only(settings.only)),
    )
    for name, check in checks:
        try:
            check()
        except GradSUMError as error:
            raise SpecError(f"{where}.{name}: {error}") from None


def check_label_study(config: RunConfig, where: str) -> None:
    """Refuse a label study that names an unknown degradation, parameter, segmenter architecture or
    inference mode, or that has no evaluated images to run on."""
    # imported here: the study's registries load torchvision, which a config without the study never needs
    from gradsum.labelling.segmenter import INFERENCE_MODES
    from gradsum.labelling.segmenters import SEGMENTER_ARCHITECTURES
    from gradsum.truthsets.degrade import degradation

    settings = config.labels
    if settings is None:
        return
    if not config.evaluation.checks:
        raise SpecError(
            f"{where}: the study runs on the evaluated images; evaluation.checks must name a check"
        )
    for i, entry in enumerate(settings.degradations):
        try:
            degradation(entry.name, **entry.params)
        except GradSUMError as error:
            raise SpecError(f"{where}.degradations[{i}]: {error}") from None
    if not 0.0 < settings.agreement <= 1.0:
        raise SpecError(f"{where}.agreement: must be in (0, 1], got {settings.agreement}")
    pseudo = settings.pseudo
    if pseudo is not None:
        SEGMENTER_ARCHITECTURES.get(pseudo.architecture, f"{where}.pseudo.architecture")
        if pseudo.mode not in INFERENCE_MODES:
            raise SpecError(f"{where}.pseudo.mode: {pseudo.mode!r}; valid: {', '.join(INFERENCE_MODES)}")
        if not pseudo.budgets or min(pseudo.budgets) < 1:
            raise SpecError(f"{where}.pseudo.budgets: one or more step counts, each at least 1")


def _check_twins(config: RunConfig, source: str, name: str, what: str, needs_spec: bool = False) -> None:
    """Each model named in `evaluation.<name>` is one of the run's trained models (with a spec when
    `needs_spec`)."""
    entries = {m.name: m for m in config.models}
    for i, twin in enumerate(getattr(config.evaluation, name)):
        where = f"{source}.evaluation.{name}[{i}]"
        entry = entries.get(twin)
        if entry is None:
            raise SpecError(f"{where}: unknown model {twin!r}; valid: {', '.join(entries)}")
        if entry.compress is not None:
            raise SpecError(
                f"{where}: {twin!r} is compressed from {entry.compress.base!r}, not trained, so it has no "
                f"{what}; name a trained model"
            )
        if entry.finetune is not None:
            # a twin is trained like the model; a fine-tune has no training of its own
            raise SpecError(
                f"{where}: {twin!r} is fine-tuned from {entry.finetune.base!r}, not trained, so it has no "
                f"{what}; name a trained model"
            )
        if needs_spec and entry.spec is None:
            raise SpecError(
                f"{where}: {twin!r} has no spec to train its {what} from; name a model with a spec"
            )


#: ModelConfig fields that say how to train from scratch; a fine-tune inherits its base's instead
TRAINING_FIELDS = ("spec", "overrides", "train_on")


def check_finetune(entry: ModelConfig, settings: FinetuneConfig, earlier: list[str], where: str) -> None:
    """Refuse a fine-tune whose base is not an earlier entry, that also says how to train, or whose
    settings are invalid (`FinetuneSettings.check`); messages name `where` and the field."""
    if settings.base not in earlier:
        valid = ", ".join(earlier) or "none (list the base model before this one)"
        raise SpecError(
            f"{where}.finetune.base: {settings.base!r} is not a model listed before {entry.name!r}; "
            f"valid: {valid}"
        )
    for name in TRAINING_FIELDS:
        if getattr(entry, name):
            raise SpecError(
                f"{where}.{name}: a fine-tuned model inherits its base's training; remove {name} "
                "or the finetune block"
            )
    settings.check(lambda name: f"{where}.finetune.{name}")


def check_compress(entry: ModelConfig, settings: CompressConfig, earlier: list[str], where: str) -> None:
    """Refuse a compressed entry whose base is not an earlier entry, that also says how to train or
    fine-tune, or whose method or level its compression refuses; messages name `where` and the field."""
    # imported here: the compressions load torch's quantisation and pruning, which most configs never need
    from gradsum.models.compression import COMPRESSIONS, check_level

    if settings.base not in earlier:
        valid = ", ".join(earlier) or "none (list the base model before this one)"
        raise SpecError(
            f"{where}.compress.base: {settings.base!r} is not a model listed before {entry.name!r}; "
            f"valid: {valid}"
        )
    for name in (*TRAINING_FIELDS, "finetune"):
        if getattr(entry, name):
            raise SpecError(
                f"{where}.{name}: a compressed model is made from its base; remove {name} or the compress block"
            )
    COMPRESSIONS.get(settings.method, f"{where}.compress.method")
    check_level(settings.method, settings.level, f"{where}.compress.level")


def check_compression_study(config: RunConfig, where: str) -> None:
    """Refuse a compression study without a compressed model to study, or with thresholds out of range."""
    settings = config.compression
    if settings is None:
        return
    if not any(entry.compress is not None for entry in config.models):
        raise SpecError(
            f"{where}: the study compares compressed models with their parents; no models[] entry has a compress block"
        )
    if not 0.0 < settings.spearman_floor <= 1.0:
        raise SpecError(f"{where}.spearman_floor: must be in (0, 1], got {settings.spearman_floor}")
    for name in ("shift_tolerance", "metric_tolerance"):
        if getattr(settings, name) < 0:
            raise SpecError(f"{where}.{name}: must be 0 or more, got {getattr(settings, name)}")
    if settings.statistic not in PROFILE_STATISTICS:
        raise SpecError(f"{where}.statistic: {settings.statistic!r}; valid: {', '.join(PROFILE_STATISTICS)}")


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from a YAML file or a built-in config name (see `list_configs`)."""
    source = Path(path)
    if not source.exists():
        builtin = builtin_configs()
        if str(path) not in builtin:
            raise SpecError(f"{path}: no such config file or built-in config; built-in: {', '.join(builtin)}")
        source = builtin.get(str(path))
    return config_from_dict(load_yaml(source), str(source))


def builtin_configs() -> Registry[Path]:
    """The shipped example configs by name (`gradsum/configs/*.yaml`)."""
    return shipped(Path(__file__).parents[1] / "configs", "built-in config")


def list_configs() -> dict[str, str]:
    """Built-in example configs: name → first comment line (what the config is for)."""
    described = {}
    for name, path in builtin_configs().items():
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        described[name] = first.lstrip("# ").strip()
    return described


def with_overrides(
    config: RunConfig,
    *,
    device: str | None = None,
    truthset: str | None = None,
    spec: str | None = None,
    workers: int | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
) -> RunConfig:
    """`config` with the command line's overrides (None: keep the config's value).

    A truth-set path given on the command line replaces the configured one and its `generate` block: the
    folder is read as it is, never rendered over.
    """
    if device is not None:
        config = replace(config, device=device)
    if truthset is not None:
        config = replace(config, truthset=replace(config.truthset, path=truthset, generate=None))
    if spec is not None:
        config = replace(config, truthset=replace(config.truthset, spec=spec))
    if workers is not None:
        if workers < 0:
            raise SpecError(f"--workers: must be 0 or more, got {workers}")
        config = replace(config, workers=workers)
    if batch_size is not None:
        if batch_size < 1:
            raise SpecError(f"--batch-size: must be 1 or more, got {batch_size}")
        config = replace(config, batch_size=batch_size)
    if precision is not None:
        config = replace(config, precision=precision)
    return config


def default_config() -> RunConfig:
    """The embedded default run (`gradsum run` with no arguments)."""
    return load_config("default")
