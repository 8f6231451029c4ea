"""The difficulty ladder of a protocol: its models, trained on a mix of levels, judged on harder renderings of
the same test scenes, one knob at a time.

`ladder_configs` expands a protocol's `ladder:` section into `gradsum run` configs, per training seed of the
ladder: one on the clean scenes (level 0: the protocol's own set, whose evaluated split the mix leaves
clean) and one per knob × level on a set of its own beside it (`<protocol>-<knob><level>`): the first
scenes of the protocol's set (a scene's seed does not depend on the scene count), of them only the training
scenes the positional-prior null averages, rendered as in the mixed set, and the evaluated split, rendered
at the level (`ladder_count`, `generate`'s mixed knob given a level). So every level is judged on the same
scenes (with the same labels and causes under an image knob, with what a scene knob adds otherwise)
against the same nulls. Each attributes and evaluates the
first `ladder.evaluated_images` images with the ladder's checks; a model missing from disk trains on the
protocol's mixed set, as the leaderboard's own runs train it, so the ladder reuses their models.

`ladder_table(folders)` reads those runs back into one long table: per protocol model, training seed,
method (controls and nulls included), knob, level and criterion, the figure, the margin over the best gating
null with its CI, that null and the verdict, beside the model's task metric on the level's images (its
headline: R² for steering, accuracy for obstacle; from the outputs the causal check recorded and the truth
set's targets). The clean run's rows stand at level 0 of every knob. `ladder_summary` says which methods
degrade first and how fast: per method × knob × criterion, the first level whose verdict is no longer the
clean one and the margin's least-squares slope per level. `ladder_figure` draws one figure per architecture
(margin against level, one line per method, one panel per knob and a row per model × criterion), and
`write_ladder` writes the tables and figures into a leaderboard folder.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from gradsum.contract import (
    CRITERIA,
    FLOAT,
    INT,
    MANIFEST,
    PLOTS,
    TEXT,
    TRUST,
    TableSchema,
    read_table,
    write_table,
)
from gradsum.errors import ResultsError, SpecError
from gradsum.evaluation.checks.causal import CAUSAL_EFFECTS_TABLE
from gradsum.evaluation.controls import ORACLE
from gradsum.evaluation.nulls import PRIOR_SCENES, PRIOR_SPLIT
from gradsum.evaluation.planned import METHOD
from gradsum.evaluation.verdicts import PASS
from gradsum.fileio import atomic_write_bytes, read_json_object
from gradsum.leaderboard.protocol import Protocol, check_protocol, run_configs
from gradsum.models import ARCHITECTURES
from gradsum.models.tasks import TRAINING_TASKS
from gradsum.names import CONTROL_SOURCE, qualified
from gradsum.pipeline.compression import headline
from gradsum.pipeline.config import RunConfig, config_from_dict
from gradsum.pipeline.evaluate import results_config
from gradsum.pipeline.inputs import configured_spec
from gradsum.report import figures as paper
from gradsum.report import plots
from gradsum.truthsets import open_truthset
from gradsum.truthsets.base import sample_id
from gradsum.truthsets.synthetic import parse_difficulty
from gradsum.truthsets.synthetic.writer import split_counts

#: The knob name the clean run's rows carry before they are set at level 0 of every knob.
CLEAN = "clean"
#: One row per protocol model × training seed × method × knob × level × criterion.
LADDER = TableSchema(
    "ladder",
    (
        ("model", TEXT),
        ("seed", INT),
        ("architecture", TEXT),
        ("task", TEXT),
        ("method", TEXT),
        ("role", TEXT),
        ("knob", TEXT),
        ("level", INT),
        ("criterion", TEXT),
        ("figure", FLOAT),
        ("margin", FLOAT),
        ("margin_ci_low", FLOAT),
        ("margin_ci_high", FLOAT),
        ("margin_null", TEXT),
        ("verdict", TEXT),
        #: the task's headline metric (`models.tasks.TRAINING_TASKS`) and its value on the level's images
        ("metric", TEXT),
        ("metric_value", FLOAT),
    ),
)
#: One row per protocol model × training seed × method × knob × criterion: how its trust degrades.
LADDER_SUMMARY = TableSchema(
    "ladder_summary",
    (
        ("model", TEXT),
        ("seed", INT),
        ("architecture", TEXT),
        ("method", TEXT),
        ("knob", TEXT),
        ("criterion", TEXT),
        ("clean_verdict", TEXT),
        ("lost_at", FLOAT),
        ("slope", FLOAT),
    ),
)
#: Each architecture's figure: `plots/ladder_<architecture>.<format>`.
FIGURE_STEM = "ladder"
#: The figure's formats: the PNG a page embeds, the PDF a paper takes (both without dates: same table, same
#: bytes).
FIGURE_FORMATS = {"png": plots.figure_bytes, "pdf": paper.figure_bytes}


@dataclass(frozen=True)
class LadderRun:
    """One run of the ladder: the scenes at `level` of `knob` (CLEAN, level 0: the clean scenes)."""

    knob: str
    level: int
    seed: int
    config: RunConfig


def ladder_set_path(truthset_path: str | os.PathLike[str], protocol: Protocol, knob: str, level: int) -> Path:
    """Where the evaluated split rendered at `level` of `knob` lives: beside the protocol's set."""
    return Path(truthset_path).parent / f"{protocol.name}-{knob}{level}"


def ladder_count(protocol: Protocol) -> int:
    """The scene count of a level's set: the smallest whose evaluated split holds the ladder's images and whose
    training split the first PRIOR_SCENES scenes the positional prior averages (as many as the protocol's
    set has): a level's nulls are the clean run's nulls, and no scene more is rendered."""
    assert protocol.ladder is not None  # ladder_configs checked it
    settings = protocol.generator
    whole = split_counts(settings.count, settings.split_fractions)
    needed = {
        protocol.split: protocol.ladder.evaluated_images,
        PRIOR_SPLIT: min(PRIOR_SCENES, whole[PRIOR_SPLIT]),
    }

    def holds(count: int) -> bool:
        counts = split_counts(count, settings.split_fractions)
        return all(counts[split] >= scenes for split, scenes in needed.items())

    return next(count for count in range(len(whole), settings.count + 1) if holds(count))


def ladder_configs(
    protocol: Protocol,
    methods: Sequence[Mapping[str, Any]] = (),
    truthset_path: str | None = None,
    models_dir: str | None = None,
    results_dir: str = "results",
) -> list[LadderRun]:
    """The ladder's runs of `protocol` (see the module docstring), clean first, then knob by knob and level
    by level, per ladder training seed; `truthset_path` is the protocol's mixed set (default
    `datasets/<protocol>`), the rest as `run_configs` takes them."""
    ladder = protocol.ladder
    if ladder is None:
        raise SpecError(f"protocol {protocol.name}: has no ladder section")
    mixed_path = truthset_path if truthset_path is not None else str(Path("datasets") / protocol.name)
    seeds = dict(
        zip(
            protocol.training_seeds,
            run_configs(protocol, methods, mixed_path, models_dir, results_dir),
            strict=True,
        )
    )
    steps = [(CLEAN, 0), *((knob, level) for knob in ladder.knobs for level in ladder.levels)]
    return [
        LadderRun(knob, level, seed, _ladder_config(protocol, seeds[seed], seed, knob, level, mixed_path))
        for seed in ladder.training_seeds
        for knob, level in steps
    ]


def ladder_steps(protocol: Protocol) -> list[str]:
    """The names a ladder's runs can be selected by: CLEAN (the level-0 run) and each knob (its levels)."""
    return [CLEAN, *(protocol.ladder.knobs if protocol.ladder is not None else ())]


def select_ladder(
    protocol: Protocol, runs: Sequence[LadderRun], steps: Sequence[str] | None
) -> list[LadderRun]:
    """The runs of `steps` (CLEAN or knobs; None: every run), so that a ladder can be split over CI jobs."""
    if steps is None:
        return list(runs)
    valid = ladder_steps(protocol)
    unknown = [step for step in steps if step not in valid]
    if unknown:
        raise SpecError(
            f"--ladder: {', '.join(unknown)} not a step of protocol {protocol.name}'s ladder; valid: "
            f"{', '.join(valid)}"
        )
    return [run for run in runs if run.knob in steps]


def _ladder_config(
    protocol: Protocol, base: RunConfig, seed: int, knob: str, level: int, mixed_path: str
) -> RunConfig:
    """`base` (a training seed's leaderboard run) narrowed to the ladder's images and checks, on the scenes
    at `level` of `knob`."""
    assert protocol.ladder is not None  # ladder_configs checked it
    ladder = protocol.ladder
    data = copy.deepcopy(dataclasses.asdict(base))
    step = CLEAN if level == 0 else f"{knob}{level}"
    data["name"] = f"{protocol.name}-ladder-{step}-seed{seed}"
    mixed = data["truthset"]["generate"]
    data["truthset"]["limit"] = ladder.evaluated_images
    if level:
        data["truthset"]["path"] = str(ladder_set_path(mixed_path, protocol, knob, level))
        data["truthset"]["generate"] = {
            **mixed,
            # the mix stays: the training scenes are the mixed set's own (the prior's scenes), only the
            # evaluated split takes the level (`generate`: a mixed knob given a level)
            "count": ladder_count(protocol),
            "difficulty": (f"{knob}={level}",),
            "only": (PRIOR_SPLIT, protocol.split),
        }
    for model in data["models"]:
        model["train_on"] = {"path": mixed_path, "generate": mixed}
    evaluation = data["evaluation"]
    evaluation["checks"] = tuple(sorted(ladder.checks))
    evaluation["images"] = ladder.evaluated_images
    evaluation["options"] = {k: v for k, v in evaluation["options"].items() if k in ladder.checks}
    return config_from_dict(data, f"protocol {protocol.name}: ladder")


# ----- the table -----


@dataclass(frozen=True)
class _Step:
    """What one ladder results folder is: its knob and level, and its run config."""

    folder: Path
    knob: str
    level: int
    config: RunConfig


def _step(folder: Path) -> _Step:
    """A ladder results folder's knob and level, from the difficulty its truth set was rendered with."""
    config = results_config(folder, read_json_object(folder / MANIFEST, ResultsError, "results manifest"))
    generate = config.truthset.generate
    levels = parse_difficulty(generate.difficulty if generate is not None else ()).levels
    if len(levels) > 1:
        raise ResultsError(
            f"{folder / MANIFEST}: config.truthset.generate.difficulty sets {len(levels)} knobs; a ladder run "
            "sets one knob or none"
        )
    knob, level = levels[0] if levels else (CLEAN, 0)
    return _Step(folder, knob, level, config)


def _models(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Run model name → its protocol model, training seed, architecture family and task."""
    described = {}
    for entry in config.models:
        seed = int(entry.overrides.get("train", {}).get("seed", 0))
        spec = configured_spec(entry)
        if spec is None:
            raise ResultsError(f"{config.name}: models[{entry.name}] names no spec; a protocol model does")
        described[entry.name] = {
            "model": entry.name.removesuffix(f"_s{seed}"),
            "seed": seed,
            "architecture": ARCHITECTURES.get(spec.architecture).family,
            "task": spec.task,
        }
    return described


def task_metrics(folder: Path, config: RunConfig) -> dict[str, float]:
    """Run model name → its task's headline metric on the run's evaluated images: the outputs the causal
    check recorded (`causal_effects`; a ladder always runs it, `protocol.LADDER_METRIC_CHECK`) against the
    truth set's targets; empty for a folder without the table."""
    effects = read_table(folder, CAUSAL_EFFECTS_TABLE, missing_ok=True)
    if effects is None:
        return {}
    truthset = open_truthset(config.truthset.path, config.truthset.split or "test")
    targets: dict[str, Mapping[str, float]] = {}
    for index in range(min(len(truthset), config.evaluation.images)):
        sample = truthset[index]
        targets[sample_id(sample.meta, index)] = sample.targets
    metrics = {}
    for model, rows in effects.drop_duplicates(["model", "image"]).groupby("model", sort=True):
        task = str(rows["task"].iloc[0])
        kept = rows[rows["image"].isin(list(targets))]
        values = kept["output"].to_numpy(np.float64)
        truth = np.array([targets[image][task] for image in kept["image"]], dtype=np.float64)
        metrics[str(model)] = headline(values, truth, task) if len(kept) else math.nan
    return metrics


def _step_rows(step: _Step) -> list[dict[str, Any]]:
    """The long rows of one ladder folder (knob CLEAN for the clean run)."""
    trust = read_table(step.folder, TRUST)
    keys = list(read_table(step.folder, CRITERIA)["key"])
    models = _models(step.config)
    metrics = task_metrics(step.folder, step.config)
    rows = []
    for record in trust.to_dict("records"):
        model = models.get(str(record["model"]))
        if model is None:
            continue  # a twin or another model the protocol does not rank
        for key in keys:
            verdict = record.get(f"{key}_verdict")
            if not isinstance(verdict, str) or not verdict:
                continue  # a criterion of another model's task
            rows.append(
                {
                    **model,
                    "method": record["method"],
                    "role": record["role"],
                    "knob": step.knob,
                    "level": step.level,
                    "criterion": key,
                    "figure": record.get(key, math.nan),
                    "margin": record.get(f"{key}_margin", math.nan),
                    "margin_ci_low": record.get(f"{key}_margin_ci_low", math.nan),
                    "margin_ci_high": record.get(f"{key}_margin_ci_high", math.nan),
                    "margin_null": record.get(f"{key}_margin_null", ""),
                    "verdict": verdict,
                    "metric": TRAINING_TASKS.get(model["task"], "task").headline,
                    "metric_value": metrics.get(str(record["model"]), math.nan),
                }
            )
    return rows


def ladder_table(folders: Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    """The ladder's long table (`LADDER`) from its runs' results folders (see the module docstring).

    The folders must share one protocol hash (`check_protocol`); the clean run's rows are repeated at level
    0 of every knob the other folders hold. Rows are sorted by model, seed, method, criterion, knob, level.
    """
    paths = [Path(folder) for folder in folders]
    check_protocol(paths)
    steps = [_step(path) for path in paths]
    knobs = sorted({step.knob for step in steps if step.level})
    rows = []
    for step in steps:
        for row in _step_rows(step):
            if step.level:
                rows.append(row)
            else:
                rows.extend({**row, "knob": knob} for knob in knobs or [CLEAN])
    table = pd.DataFrame(rows, columns=list(LADDER.names))
    order = ["model", "seed", "method", "criterion", "knob", "level"]
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def ladder_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per protocol model × seed × method × knob × criterion (`LADDER_SUMMARY`): the verdict at level 0, the
    first level whose verdict differs from it (NaN: none does), and the margin's least-squares slope per
    level over the levels with a finite margin (NaN with fewer than two)."""
    rows = []
    keys = ["model", "seed", "architecture", "method", "knob", "criterion"]
    for key, group in table.groupby(keys, sort=True):
        group = group.sort_values("level")
        clean = group[group["level"] == 0]
        clean_verdict = str(clean["verdict"].iloc[0]) if len(clean) else ""
        changed = group[(group["level"] > 0) & (group["verdict"] != clean_verdict)]
        finite = group[np.isfinite(group["margin"].to_numpy(np.float64))]
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "clean_verdict": clean_verdict,
                "lost_at": float(changed["level"].min()) if len(changed) else math.nan,
                "slope": slope(finite["level"].to_numpy(np.float64), finite["margin"].to_numpy(np.float64)),
            }
        )
    return pd.DataFrame(rows, columns=list(LADDER_SUMMARY.names))


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares slope of y on x, Sxy / Sxx (exactly 0 for a constant y; NaN with one x value)."""
    dx = x - x.mean() if len(x) else x
    sxx = float((dx**2).sum())
    return float((dx * (y - y.mean())).sum()) / sxx if sxx > 0 else math.nan


# ----- the figure -----


#: every panel's reference line: the oracle (the model's own measured erasure effects) over the nulls at
#: each level, so a method's fall reads against what the check can still tell apart at that level
REFERENCE = qualified(CONTROL_SOURCE, ORACLE)
REFERENCE_LABEL = f"{REFERENCE} (reference)"
#: a marker per round of the palette's colours: an architecture scores more methods than any palette has
#: distinguishable colours, and a repeated colour alone would make two methods' lines one
MARKERS = ("o", "s", "^", "D", "v", "P")
#: a legend column's width in inches at the legend's font: the longest method name beside its handle
LEGEND_COLUMN = 2.1


def method_styles(methods: Sequence[str]) -> dict[str, tuple[tuple[float, float, float], str]]:
    """Each method's (colour, marker) in `methods`' order: tab20's colours with a circle, then again with
    the next marker, so up to 20 × len(MARKERS) methods get distinct lines (more start the round again)."""
    styles = [(colour, marker) for marker in MARKERS for colour in sns.color_palette("tab20", 20)]
    return {method: styles[i % len(styles)] for i, method in enumerate(methods)}


def ladder_plot(table: pd.DataFrame, architecture: str) -> Figure:
    """Margin over the best gating null against level for one architecture's models: a panel per knob
    (columns) and per protocol model × criterion (rows), one line per method (role "method") and training
    seed, with its CI, a filled marker where the verdict is pass, and the oracle control's line as the
    panel's reference (where the runs scored it)."""
    ours = table[table["architecture"] == architecture]
    rows = ours[ours["role"] == METHOD]
    if rows.empty:
        raise ResultsError(f"ladder: no method rows for architecture {architecture!r}")
    reference = ours[ours["method"] == REFERENCE]
    knobs = sorted(set(rows["knob"]))
    panels = sorted({(str(m), str(c)) for m, c in zip(rows["model"], rows["criterion"], strict=True)})
    methods = sorted(set(rows["method"]))
    styles = method_styles(methods)
    # at least two panels wide: the title and legend would be cut at one knob's width
    width = 3.2 * max(len(knobs), 2)
    fig = Figure(figsize=(width, 2.4 * len(panels) + 0.8), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(panels), len(knobs), squeeze=False))
    for r, (model, criterion) in enumerate(panels):
        for c, knob in enumerate(knobs):
            ax = axes[r, c]
            where = {"model": model, "criterion": criterion, "knob": knob}
            for (method, _seed), line in _panel(rows, where).groupby(["method", "seed"], sort=True):
                colour, marker = styles[str(method)]
                _margin_line(ax, line, color=colour, marker=marker, markersize=4, linewidth=1, mfc="none")
                passed = line[line["verdict"] == PASS]
                ax.plot(passed["level"], passed["margin"], marker, color=colour, markersize=4)
            for _seed, line in _panel(reference, where).groupby("seed", sort=True):
                _margin_line(ax, line, color="black", linewidth=2, alpha=0.6, label=REFERENCE_LABEL)
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xticks(sorted(set(rows["level"])))
            ax.grid(alpha=0.3)
            ax.set_title(f"{model}: {criterion}\n{knob}", fontsize=8)
            if r == len(panels) - 1:
                ax.set_xlabel("level")
            if c == 0:
                ax.set_ylabel("margin over best null")
    handles = [
        Line2D([], [], color=styles[m][0], marker=styles[m][1], mfc="none", linewidth=1, label=m)
        for m in methods
    ]
    if not reference.empty:
        handles.append(Line2D([], [], color="black", linewidth=2, alpha=0.6, label=REFERENCE_LABEL))
    # as many columns as the figure is wide: a wider legend is cut at the figure's edges
    columns = max(1, min(len(handles), int(width // LEGEND_COLUMN)))
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize="small")
    fig.suptitle(f"{architecture}: trust margin by difficulty level (filled: pass)")
    return fig


def _panel(rows: pd.DataFrame, where: Mapping[str, str]) -> pd.DataFrame:
    """The rows of one panel: those whose columns hold `where`'s values."""
    keep = np.ones(len(rows), dtype=bool)
    for column, value in where.items():
        keep &= (rows[column] == value).to_numpy()
    return rows[keep]


def _margin_line(ax: Axes, line: pd.DataFrame, **style: Any) -> None:
    """One line's margins by level with their CIs as error bars."""
    line = line.sort_values("level")
    margin = line["margin"].to_numpy(np.float64)
    yerr = plots.ci_errors(margin, line["margin_ci_low"], line["margin_ci_high"])
    ax.errorbar(line["level"], margin, yerr=yerr, capsize=2, **style)


def ladder_figure(table: pd.DataFrame, architecture: str, stem: str | os.PathLike[str]) -> list[Path]:
    """`ladder_plot` written as `<stem>.png` and `<stem>.pdf` (atomically); the paths written."""
    fig = ladder_plot(table, architecture)
    paths = [
        atomic_write_bytes(Path(f"{stem}.{fmt}"), encode(fig, fmt)) for fmt, encode in FIGURE_FORMATS.items()
    ]
    fig.clear()
    return paths


def write_ladder(folder: str | os.PathLike[str], table: pd.DataFrame) -> list[Path]:
    """The ladder table, its summary and one figure per architecture (`plots/ladder_<architecture>`) in
    `folder` (a leaderboard folder); the paths written."""
    root = Path(folder)
    (root / PLOTS).mkdir(parents=True, exist_ok=True)
    written = [write_table(root, LADDER, table), write_table(root, LADDER_SUMMARY, ladder_summary(table))]
    for architecture in sorted(set(table.loc[table["role"] == METHOD, "architecture"])):
        written += ladder_figure(table, architecture, root / PLOTS / f"{FIGURE_STEM}_{architecture}")
    return written
