"""The leaderboard run: execute a protocol once per training seed, then rank the methods over the seeds.

`run_leaderboard` expands the protocol into one `gradsum run` config per training seed (`run_configs`),
runs each through the pipeline (a seed whose results folder is complete, of this protocol and these
methods, is reused; the pipeline itself resumes shards and reuses models on disk), and `assemble`s the
seeds' criteria tables into one board per protocol model, written to `<results>/<protocol name>/` as
JSON, Markdown and LaTeX tables (`formats`) and the leaderboard's page (`page`).
Under `torchrun` every rank takes part in each seed's run exactly as in `gradsum run`, and rank 0 assembles.

The methods are every registered attribution method that applies to a protocol model (`protocol_methods`),
and outside methods join through `add_methods` (`gradsum leaderboard --add FILE`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import torch.distributed as dist

from gradsum.attribution import METHODS
from gradsum.attribution.base import Method
from gradsum.attribution.methods.lrp_transformer import TransformerLRP, lxt_module
from gradsum.contract import CRITERIA, CRITERIA_PER_IMAGE, MANIFEST, PROTOCOL_KEY, TRUST, read_table
from gradsum.errors import GradSUMError, ResultsError, SpecError
from gradsum.evaluation.base import Criterion
from gradsum.evaluation.controls import CONTROL_EXPLAINERS
from gradsum.evaluation.nulls import NULL_EXPLAINERS
from gradsum.evaluation.planned import METHOD, PlannedMethod
from gradsum.evaluation.verdicts import criteria_from_frame
from gradsum.fileio import read_json_object
from gradsum.leaderboard.board import Board, build_board
from gradsum.leaderboard.formats import write_boards
from gradsum.leaderboard.ladder import ladder_configs, ladder_table, select_ladder, write_ladder
from gradsum.leaderboard.layers import swept_rows
from gradsum.leaderboard.page import write_leaderboard_report
from gradsum.leaderboard.preflight import preflight
from gradsum.leaderboard.protocol import Protocol, check_protocol, protocol_hash, run_configs
from gradsum.models import ARCHITECTURES
from gradsum.names import LIBRARY_SOURCE, parse_method
from gradsum.pipeline import RunConfig, run
from gradsum.pipeline.config import ModelConfig
from gradsum.pipeline.distributed import World, joined, world_from_environment
from gradsum.pipeline.inputs import configured_spec, rendered_otherwise
from gradsum.plugins import load_plugin
from gradsum.utils import resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Under the leaderboard folder: each training seed's granularity sweep that picked the swept CAM layers.
LAYER_SWEEP_DIR = "layer_sweep"

#: Methods built on an optional library, by base class: a check that raises `GradSUMError` (saying how to
#: install it) when the library is missing.
OPTIONAL_LIBRARIES: dict[type[Method], Callable[[str], object]] = {
    TransformerLRP: lambda name: lxt_module("rules", name),
}


def protocol_families(protocol: Protocol) -> dict[str, str]:
    """Protocol model name → the family of the architecture its spec (with overrides) builds."""
    families: dict[str, str] = {}
    for model in protocol.models:
        spec = configured_spec(ModelConfig(model.name, spec=model.spec, overrides=model.overrides))
        assert spec is not None  # a protocol model always names a spec (load_protocol checks it)
        families[model.name] = ARCHITECTURES.get(spec.architecture).family
    return families


def protocol_methods(protocol: Protocol, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The `methods:` entries a leaderboard run of `protocol` scores, sorted by name.

    Every registered method under test that applies to at least one protocol model (the pipeline runs each
    on the models it applies to), except the null explainers and controls (computed beside every method),
    a `lib:X` whose `X` is registered (pytorch-grad-cam's reference of our fast path), and methods whose
    optional library is missing (logged). `extra` names methods that must be scored (those of `--add`):
    one that is unregistered or applies to no protocol model raises `SpecError`.
    """
    families = set(protocol_families(protocol).values())
    model_free = {planned.method for planned in (*NULL_EXPLAINERS, *CONTROL_EXPLAINERS)}
    chosen = []
    for name, cls in METHODS.items():
        label = parse_method(name)
        if name in model_free or (label.source == LIBRARY_SOURCE and label.method in METHODS):
            continue
        if not families & cls.applies_to:
            continue
        missing = _missing_library(name, cls)
        if missing is not None:
            log.warning("leaderboard: method %s left out: %s", name, missing)
            continue
        chosen.append(name)
    for name in extra:
        cls = METHODS.get(name, "--add")
        if not families & cls.applies_to:
            raise SpecError(
                f"--add: method {name} applies to {'/'.join(sorted(cls.applies_to))}, none of which is the "
                f"family of a model of protocol {protocol.name} ({', '.join(sorted(families))})"
            )
        if name not in chosen:
            chosen.append(name)
    return [{"method": name} for name in sorted(chosen)]


def _missing_library(name: str, cls: type[Method]) -> str | None:
    """Why `cls` cannot run here (its optional library is missing), or None."""
    for base, check in OPTIONAL_LIBRARIES.items():
        if issubclass(cls, base):
            try:
                check(name)
            except GradSUMError as error:
                return str(error)
    return None


def add_methods(files: Sequence[str | Path]) -> list[str]:
    """Import each `--add` file (a `.py` file or a dotted module) and return the methods it registers.

    A file that cannot be imported, or registers no attribution method, raises `SpecError` naming it.
    """
    added: list[str] = []
    for file in files:
        before = set(METHODS.names())
        try:
            module = load_plugin(str(file))
        except GradSUMError as error:
            raise SpecError(f"--add {file}: {error}") from None
        except Exception as error:  # anything the plugin's own code raises while it is imported
            raise SpecError(f"--add {file}: importing it failed: {type(error).__name__}: {error}") from None
        # a file imported before in this process registers nothing new: its own classes still name it
        new = (set(METHODS.names()) - before) | {
            name for name, cls in METHODS.items() if cls.__module__ == module.__name__
        }
        if not new:
            raise SpecError(
                f"--add {file}: registers no attribution method (gradsum.attribution.register_method)"
            )
        added.extend(sorted(new - set(added)))
    return added


def select_methods(
    protocol: Protocol, names: Sequence[str] | None = None, added: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The `methods:` entries of the run: `protocol_methods`, or only `names` of them, and `added`."""
    entries = protocol_methods(protocol, added)
    if names is None:
        return entries
    valid = [entry["method"] for entry in entries]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise SpecError(
            f"--methods: {', '.join(unknown)} not scored by protocol {protocol.name}; valid: {', '.join(valid)}"
        )
    keep = set(names) | set(added)
    return [entry for entry in entries if entry["method"] in keep]


def seed_configs(
    protocol: Protocol,
    methods: Sequence[Mapping[str, Any]],
    *,
    data: str | Path | None = None,
    models_dir: str | Path | None = None,
    results: str | Path = "results",
    seeds: Sequence[int] | None = None,
) -> dict[int, RunConfig]:
    """Training seed → the run config of that seed (`seeds`: a subset of the protocol's; None: all).

    `data` defaults to `datasets/<protocol name>` (a set rendered as the protocol says, never a set of other
    settings that happens to sit at the default path), `models_dir` to `run_configs`' default.
    """
    data = _data_path(protocol, data)
    models = str(models_dir) if models_dir is not None else None
    configs = dict(
        zip(
            protocol.training_seeds,
            run_configs(protocol, methods, str(data), models, str(results)),
            strict=True,
        )
    )
    if seeds is None:
        return configs
    unknown = [seed for seed in seeds if seed not in configs]
    if unknown or len(set(seeds)) != len(seeds):
        raise SpecError(
            f"--seeds: {list(seeds)}; need distinct training seeds of protocol {protocol.name}: "
            f"{list(protocol.training_seeds)}"
        )
    return {seed: configs[seed] for seed in seeds}


def results_folder(config: RunConfig) -> Path:
    """Where the pipeline writes `config`'s results."""
    return Path(config.results_dir) / config.name


def leaderboard_folder(protocol: Protocol, results: str | Path) -> Path:
    """Where a protocol's boards are written: `<results>/<protocol name>/`."""
    return Path(results) / protocol.name


def completed(config: RunConfig) -> bool:
    """Whether `config`'s results folder is complete and was made by this protocol with these methods.

    A folder of another protocol (or of none) raises `ResultsError` naming its manifest: a leaderboard
    never overwrites results it did not make. A missing or unfinished folder, or one of other methods, is
    (re)run.
    """
    path = results_folder(config) / MANIFEST
    if not path.is_file():
        return False
    manifest = read_json_object(path, ResultsError, "results manifest")
    recorded = manifest.get(PROTOCOL_KEY)
    if recorded != config.protocol:
        raise ResultsError(
            f"{path}: protocol hash {recorded or 'none'} under {PROTOCOL_KEY!r}, but this run's protocol "
            f"hashes to {config.protocol}; move the folder or choose another --results"
        )
    methods = json.loads(json.dumps([dataclasses.asdict(m) for m in config.methods]))
    return bool(manifest.get("methods") == methods)


def run_leaderboard(
    protocol: Protocol,
    *,
    data: str | Path | None = None,
    models_dir: str | Path | None = None,
    results: str | Path = "results",
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    add: Sequence[str | Path] = (),
    device: str | None = None,
    ladder: Sequence[str] | None = None,
    assemble_only: bool = False,
    progress: bool = False,
) -> Path | None:
    """Run `protocol` (each training seed's config, reusing complete folders) and write its boards.

    `methods` restricts the scored methods to these names; `add` imports files whose methods join them;
    `ladder` runs only these steps of the difficulty ladder (`ladder.ladder_steps`: "clean" or a knob; an
    empty sequence: none; None: all); `assemble_only` runs nothing and ranks the seeds' folders as they
    are. Returns the leaderboard folder (None on a `torchrun` rank other than 0, which takes part in the runs
    only).
    """
    added = add_methods(add)
    chosen = select_methods(protocol, methods, added)
    configs = seed_configs(protocol, chosen, data=data, models_dir=models_dir, results=results, seeds=seeds)
    if device is not None:
        configs = {seed: dataclasses.replace(config, device=device) for seed, config in configs.items()}
    folders = {seed: results_folder(config) for seed, config in configs.items()}
    folder = leaderboard_folder(protocol, results)
    ladder_runs = (
        ladder_configs(protocol, chosen, str(_data_path(protocol, data)), _maybe(models_dir), str(results))
        if protocol.ladder is not None
        else []
    )
    # the ladder evaluates the models of its training seeds among those this run covers
    ladder_runs = [step for step in ladder_runs if step.seed in configs]
    if device is not None:
        ladder_runs = [
            dataclasses.replace(step, config=dataclasses.replace(step.config, device=device))
            for step in ladder_runs
        ]
    # the boards' ladder table waits for every run; this call runs the chosen steps only
    chosen_steps = select_ladder(protocol, ladder_runs, ladder)
    if assemble_only:
        # every rank of a torchrun would write the same files at once
        if not world_from_environment().leader:
            return None
    else:
        every = [*configs.values(), *(step.config for step in chosen_steps)]
        # refused before anything is rendered or trained: a set rendered otherwise, results of another protocol
        refuse_rendered_otherwise(every)
        for config in every:
            completed(config)
        # one gloo group spans every seed's run: the pipeline finds it joined, and its collectives move CPU
        # tensors and Python objects only
        with joined("cpu") as world:
            # a method that cannot run on a protocol model is named now, not after a seed's trainings
            _leader_value(world, functools.partial(preflight, protocol, chosen))
            swept: dict[int, tuple[PlannedMethod, ...]] = {}
            for seed, config in configs.items():
                record = folder / LAYER_SWEEP_DIR / f"seed{seed}"
                swept[seed] = _leader_value(
                    world, functools.partial(_swept_rows, config, protocol, world, record)
                )
                _run_once(world, _with_methods(config, swept[seed]), f"seed {seed}", progress)
            for step in chosen_steps:
                # a ladder run judges its seed's models, so at the layers that seed's sweep picked too
                what = f"ladder {step.knob} {step.level} seed {step.seed}"
                _run_once(world, _with_methods(step.config, swept[step.seed]), what, progress)
        if not world.leader:
            return None
    boards = assemble(protocol, folders)
    for path in write_boards(folder, boards, protocol.name, protocol_hash(protocol)):
        log.info("leaderboard: wrote %s", path)
    ladder_folders = [results_folder(step.config) for step in ladder_runs]
    missing = [f for f in ladder_folders if not (f / MANIFEST).is_file()]
    if missing:
        log.warning(
            "leaderboard: the ladder is incomplete (%d of %d runs missing, e.g. %s); not written",
            len(missing),
            len(ladder_folders),
            missing[0],
        )
    elif ladder_folders:
        for path in write_ladder(folder, ladder_table(ladder_folders)):
            log.info("leaderboard: wrote %s", path)
    log.info("leaderboard: wrote %s", write_leaderboard_report(folder))
    return folder


def refuse_rendered_otherwise(configs: Sequence[RunConfig]) -> None:
    """Refuse a synthetic set on disk that was rendered otherwise than the protocol's run configs say.

    `gradsum run` warns and reads such a set as it is; a leaderboard's tables would then not be the
    protocol's, so the error names the set's manifest, the differences and what to do.
    """
    for config in configs:
        sets = [(config.truthset.path, config.truthset.generate)]
        sets += [(m.train_on.path, m.train_on.generate) for m in config.models if m.train_on is not None]
        for path, settings in sets:
            differences = None if settings is None else rendered_otherwise(Path(path), settings)
            if differences:
                raise SpecError(
                    f"{Path(path) / MANIFEST}: this set was rendered with {differences}, not as the "
                    "protocol says; remove it (it is rendered again) or give --data another folder"
                )


def _data_path(protocol: Protocol, data: str | Path | None) -> Path:
    """The protocol's truth-set folder: `data`, else `datasets/<protocol name>`."""
    return Path(data) if data is not None else Path("datasets") / protocol.name


def _maybe(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _swept_rows(
    config: RunConfig, protocol: Protocol, world: World, record: Path
) -> tuple[PlannedMethod, ...]:
    """`layers.swept_rows` of `config`'s models on this rank's device."""
    return swept_rows(config, protocol, world.device(resolve_device(config.device)), record)


def _with_methods(config: RunConfig, methods: Sequence[PlannedMethod]) -> RunConfig:
    """`config` scoring `methods` too."""
    return dataclasses.replace(config, methods=(*config.methods, *methods))


def _run_once(world: World, config: RunConfig, what: str, progress: bool) -> None:
    """Run `config` unless its results folder is complete (`completed`: rank 0 decides for every rank)."""
    folder = results_folder(config)
    if _agreed(world, functools.partial(completed, config)):
        log.info("leaderboard: %s reuses %s", what, folder)
        return
    log.info("leaderboard: %s runs into %s", what, folder)
    run(config, out=folder, progress=progress)


def _agreed(world: World, decide: Callable[[], bool]) -> bool:
    """Rank 0's `decide()` on every rank, so all ranks run alike."""
    return bool(_leader_value(world, decide))


def _leader_value(world: World, compute: Callable[[], T]) -> T:
    """Rank 0's `compute()` on every rank (an error there is raised on every rank)."""
    if not world.distributed:
        return compute()
    outcome: list[object] = [None]
    if world.leader:
        try:
            outcome[0] = compute()
        except GradSUMError as error:
            outcome[0] = error
    dist.broadcast_object_list(outcome, src=0)
    if isinstance(outcome[0], GradSUMError):
        raise outcome[0]
    return outcome[0]  # type: ignore[return-value]


def assemble(protocol: Protocol, folders: Mapping[int, Path]) -> list[Board]:
    """One board per protocol model from the seeds' results folders (training seed → folder).

    The folders must all record this protocol's hash; each holds the criteria and their per-image values
    (contract.CRITERIA, CRITERIA_PER_IMAGE) for its seed's models `<model>_s<seed>`.
    """
    if not folders:
        raise SpecError("assemble: no results folders given")
    expected = protocol_hash(protocol)
    recorded = check_protocol(list(folders.values()))
    if recorded != expected:
        raise ResultsError(
            f"{next(iter(folders.values())) / MANIFEST}: protocol hash {recorded}, but protocol "
            f"{protocol.name} hashes to {expected}"
        )
    seeds = _SeedTables.read(protocol, folders)
    return [
        build_board(
            model.name,
            seeds.family(model.name),
            model.task,
            seeds.per_image(model.name),
            seeds.criteria,
            seeds.roles(model.name),
            n_resamples=protocol.verdict_resamples,
            seed=protocol.seed,
        )
        for model in protocol.models
    ]


@dataclasses.dataclass(frozen=True)
class _SeedTables:
    """What `assemble` reads from each seed's results folder."""

    folders: Mapping[int, Path]
    manifests: Mapping[int, dict[str, Any]]
    per_image_rows: Mapping[int, pd.DataFrame]
    trust: Mapping[int, pd.DataFrame]
    criteria: list[Criterion]
    #: training seed → protocol model name → that seed's model name (`<model>_s<seed>`)
    names: Mapping[int, Mapping[str, str]]

    @classmethod
    def read(cls, protocol: Protocol, folders: Mapping[int, Path]) -> _SeedTables:
        """The tables of `folders` (training seed → results folder); the seeds' criteria must agree."""
        configs = dict(zip(protocol.training_seeds, run_configs(protocol), strict=True))
        unknown = sorted(set(folders) - set(configs))
        if unknown:
            raise SpecError(f"assemble: seeds {unknown} are not training seeds of protocol {protocol.name}")
        names = {
            seed: {
                model.name: entry.name
                for model, entry in zip(protocol.models, configs[seed].models, strict=True)
            }
            for seed in folders
        }
        frames = {seed: read_table(folder, CRITERIA) for seed, folder in folders.items()}
        first, reference = next(iter(frames.items()))
        for seed, frame in frames.items():
            if not frame.reset_index(drop=True).equals(reference.reset_index(drop=True)):
                raise ResultsError(
                    f"{folders[seed] / CRITERIA.file}: the criteria differ from those of seed {first} "
                    f"({folders[first] / CRITERIA.file})"
                )
        return cls(
            folders=folders,
            manifests={
                seed: read_json_object(folder / MANIFEST, ResultsError, "results manifest")
                for seed, folder in folders.items()
            },
            per_image_rows={seed: read_table(folder, CRITERIA_PER_IMAGE) for seed, folder in folders.items()},
            trust={seed: read_table(folder, TRUST) for seed, folder in folders.items()},
            criteria=criteria_from_frame(reference),
            names=names,
        )

    def per_image(self, model: str) -> dict[int, pd.DataFrame]:
        """Training seed → the criteria_per_image rows of protocol model `model` trained with it."""
        found = {}
        for seed, frame in self.per_image_rows.items():
            name = self.names[seed][model]
            rows = frame[frame["model"] == name]
            if rows.empty:
                raise ResultsError(f"{self.folders[seed] / CRITERIA_PER_IMAGE.file}: no rows of model {name}")
            found[seed] = rows.reset_index(drop=True)
        return found

    def family(self, model: str) -> str:
        """The family each seed's manifest records for `model` (the same in every seed)."""
        families = {
            seed: manifest.get("families", {}).get(self.names[seed][model])
            for seed, manifest in self.manifests.items()
        }
        if len(set(families.values())) != 1 or None in families.values():
            raise ResultsError(
                f"{MANIFEST} of {', '.join(str(f) for f in self.folders.values())}: model {model} has no "
                f"single family across seeds ({families})"
            )
        return str(next(iter(families.values())))

    def roles(self, model: str) -> dict[str, str]:
        """Method label → its role (`evaluation.planned.ROLES`) in the trust tables of `model`'s seeds."""
        roles: dict[str, str] = {}
        for seed, frame in self.trust.items():
            rows = frame[frame["model"] == self.names[seed][model]]
            roles.update(zip(rows["method"].astype(str), rows["role"].astype(str), strict=True))
        return {method: role or METHOD for method, role in sorted(roles.items())}
