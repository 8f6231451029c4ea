"""Training from scratch on a truth set: AdamW, warm-up + cosine, early stopping, resumable epochs.

The whole (small) split is preloaded as uint8 tensors once (images only, decoded by a few threads), so
epochs cost model time only: batches are gathered, converted and augmented as whole tensors. Randomness
comes from explicit generators seeded by the spec: the process's global RNGs are never reseeded. After each
epoch a resume state (model, optimizer, scheduler, generator, history and the run's configuration) is
written beside the output folder; the finished checkpoint replaces `out/` atomically, and only when
training completes, so a killed run never leaves a model folder that a later run would use. A resume
state from another configuration is refused, naming what changed, rather than mixed or silently dropped.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import pickle
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gradsum.contract import BEST_WEIGHTS, RESUME_STATE
from gradsum.dataspec import changed_fields
from gradsum.errors import TrainingError, TruthSetError
from gradsum.fileio import atomic_directory, atomic_write_bytes
from gradsum.models.checkpoints import ModelCard, card_for, save_model, state_dict_bytes
from gradsum.models.inputs import resize_uint8
from gradsum.models.specs import AugmentConfig, ModelSpec, load_spec
from gradsum.models.tasks import TRAINING_TASKS, Metrics, Task
from gradsum.truthsets import TruthSet, open_truthset
from gradsum.utils import resolve_device

log = logging.getLogger(__name__)

#: fraction of `train` held out for validation when a truth set has no `val` split
VAL_FRACTION = 0.1
EVAL_BATCH = 256
#: threads decoding a split's images (PIL releases the GIL while it decodes)
DECODE_THREADS = 4
#: what `torch.load` raises on a truncated, corrupt or unreadable resume state
UNREADABLE_STATE = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError)
#: what a resume state must hold to be applied
STATE_KEYS = frozenset({"configuration", "model", "optimizer", "scheduler", "generator", "progress"})


@dataclass
class SplitData:
    """A preloaded split: uint8 images (N, 3, H, W) and float32 targets (N,)."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: torch.Tensor) -> SplitData:
        """The rows at `index`."""
        return SplitData(self.images[index], self.targets[index])


@dataclass
class Progress:
    """Everything a resumed run needs besides the model, optimizer and scheduler."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)


EpochCallback = Callable[[int, dict[str, float]], None]


def preload(truthset: TruthSet, task: str, img_size: tuple[int, int]) -> SplitData:
    """Decode every image of a split once, resized to `img_size` when it differs.

    Only the images are decoded (`TruthSet.image`; label maps and scene records stay on disk), by
    `DECODE_THREADS` threads, frame by frame through the one input transform (`gradsum.models.inputs`):
    frames of different sizes stack once resized, and a split of full-resolution frames never sits in
    memory at full size.
    """
    images = torch.empty(len(truthset), 3, *img_size, dtype=torch.uint8)

    def load(index: int) -> None:
        frame = torch.from_numpy(np.ascontiguousarray(truthset.image(index))).permute(2, 0, 1)[None]
        images[index] = resize_uint8(frame.contiguous(), img_size)[0]

    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(load, range(len(truthset))))
    targets = torch.from_numpy(np.array(truthset.targets(task), dtype=np.float32))
    return SplitData(images, targets)


def open_splits(truthset: str | Path | Mapping[str, TruthSet], task: str) -> dict[str, TruthSet]:
    """The `train`, `val` and `test` splits that exist (a mapping of splits is taken as given)."""
    if isinstance(truthset, Mapping):
        splits = dict(truthset)
    else:
        splits = {}
        for name in ("train", "val", "test"):
            try:
                split = open_truthset(truthset, name)
            except TruthSetError:
                if name == "train":
                    raise
                continue
            if len(split):
                splits[name] = split
    where = truthset if not isinstance(truthset, Mapping) else "the given splits"
    if "train" not in splits:
        raise TrainingError(f"{where}: truth set has no train split")
    if task not in splits["train"].tasks:
        raise TrainingError(
            f"task {task!r} is not in truth set {where} (it has: {', '.join(splits['train'].tasks) or 'none'})"
        )
    return splits


def warmup_cosine(total_steps: int, warmup: float) -> Callable[[int], float]:
    """LR factor: linear warm-up over `warmup` of the steps, then cosine decay to zero."""
    warm = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no decay on biases, norms, position embeddings and class tokens."""
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "reg_token"))
        (plain if no_decay else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def augment(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Photometric jitter and noise that keep both targets true; never flips (keep-right convention)."""
    batch = images.shape[0]

    def factor(amount: float) -> torch.Tensor:
        draw = torch.rand(batch, 1, 1, 1, generator=generator) * 2.0 - 1.0
        return (1.0 + amount * draw).to(images.device)

    out = images
    if config.brightness:
        out = out * factor(config.brightness)
    if config.contrast:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor(config.contrast) + mean
    if config.saturation:
        gray = out.mean(dim=1, keepdim=True)
        out = (out - gray) * factor(config.saturation) + gray
    if config.noise:
        out = out + config.noise * torch.randn(out.shape, generator=generator).to(images.device)
    return out.clamp(0.0, 1.0)


def to_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """uint8 (B, 3, H, W) → float32 in [0, 1] on `device`, the model input convention."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def training_batch(
    train: SplitData, index: torch.Tensor, config: AugmentConfig, generator: torch.Generator, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmented model inputs and the targets of rows `index`: one gather, one conversion, whole-batch
    augmentation drawing from `generator`."""
    images = augment(to_input(train.images[index], device), config, generator)
    return images, train.targets[index].to(device)


def module_seed(seed: int, epoch: int) -> int:
    """The seed of what the model itself draws in training epoch `epoch` (dropout masks, drop paths)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@contextmanager
def seeded_module_rng(seed: int, device: torch.device | str) -> Iterator[None]:
    """Seed what a module draws from torch's default generators, restoring the caller's state on exit.

    Layers initialise their weights and draw dropout masks from the default generators, which take no
    generator argument; forking keeps a training run's draws its own without reseeding the process.
    """
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where] if where.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def predict(model: nn.Module, data: SplitData, device: torch.device | str) -> torch.Tensor:
    """Model outputs (N,) on CPU, in eval mode and batches of `EVAL_BATCH`."""
    model.eval()
    outputs = [
        model(to_input(data.images[i : i + EVAL_BATCH], device)).reshape(-1).float().cpu()
        for i in range(0, len(data), EVAL_BATCH)
    ]
    return torch.cat(outputs)


def evaluate(
    model: nn.Module, data: SplitData, task: Task, device: torch.device | str
) -> tuple[float, Metrics]:
    """Loss and metrics of `model` on a preloaded split."""
    pred = predict(model, data, device)
    loss = float(task.loss(pred, data.targets))
    return loss, task.metrics(pred.numpy(), data.targets.numpy())


def run_configuration(
    spec: ModelSpec, task: str, sizes: Mapping[str, int], truthset: Mapping[str, Any], shuffled: bool
) -> dict[str, Any]:
    """What a resume state must match, field by field: spec, task, truth set, split sizes, label shuffling."""
    # the description is prose: editing it changes nothing that training computes
    trained = {key: value for key, value in spec.to_dict().items() if key != "description"}
    return {
        "spec": trained,
        "task": task,
        "truthset": dict(truthset),
        "splits": dict(sizes),
        "shuffle_labels": shuffled,
    }


def _value_at(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def state_folder(out: Path) -> Path:
    """Where resume state and the best-so-far weights live while `out` trains (beside it, hidden)."""
    return out.parent / f".{out.name}.train-state"


class Trainer:
    """One training run of `spec` on preloaded splits, writing its resume state to `state_dir`."""

    def __init__(
        self,
        spec: ModelSpec,
        task: Task,
        data: Mapping[str, SplitData],
        state_dir: Path,
        device: torch.device | str,
        configuration: dict[str, Any],
    ) -> None:
        self.spec, self.task, self.data, self.device = spec, task, data, device
        self.state_dir, self.configuration = state_dir, configuration
        config = spec.train
        with seeded_module_rng(config.seed, device):
            self.model = spec.build().to(device)
        # fused: one kernel for the whole update, not a dozen per parameter tensor (a third of a small
        # model's step on a 2-core CPU)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, config.weight_decay), lr=config.lr, fused=True
        )
        # drop a last batch of one: BatchNorm cannot train on it
        full, rest = divmod(len(data["train"]), config.batch_size)
        self.steps_per_epoch = max(1, full + (rest > 1))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, config.warmup)
        )
        # batch order and augmentation
        self.generator = torch.Generator().manual_seed(config.seed)
        self.progress = Progress()

    @property
    def resume_path(self) -> Path:
        return self.state_dir / RESUME_STATE

    @property
    def best_path(self) -> Path:
        return self.state_dir / BEST_WEIGHTS

    def save_state(self) -> None:
        """Write the resume state atomically (tensors and plain values only, loadable with weights_only)."""
        state = {
            "configuration": json.dumps(self.configuration, sort_keys=True),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "progress": json.dumps(dataclasses.asdict(self.progress)),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(self.resume_path, buffer.getvalue())

    def load_state(self) -> bool:
        """Continue from a saved resume state; False when there is none, `TrainingError` when it is another run's."""
        if not self.resume_path.is_file():
            return False
        state = self.read_state()
        if state is None:
            return False
        self.check_configuration(state.get("configuration"))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.progress = Progress(**json.loads(state["progress"]))
        log.info("resuming %s after epoch %d", self.spec.name, self.progress.epoch)
        return True

    def read_state(self) -> dict[str, Any] | None:
        """The saved resume state; None (and a warning naming the file) when it is damaged or incomplete:
        a damaged resume state only costs the epochs it held."""
        try:
            state = torch.load(self.resume_path, map_location="cpu", weights_only=True)
        except UNREADABLE_STATE as error:
            reason = f"{type(error).__name__}: {error}"
        else:
            if isinstance(state, dict) and state.keys() >= STATE_KEYS:
                return state
            reason = "it is not a GradSUM resume state"
        log.warning("%s: unreadable resume state, starting afresh (%s)", self.resume_path, reason)
        return None

    def check_configuration(self, recorded: object) -> None:
        """Refuse a resume state written under another configuration, naming the fields that changed."""
        if not isinstance(recorded, str):
            changes = "it records no configuration (written by an older GradSUM)"
        else:
            before = json.loads(recorded)
            now = json.loads(json.dumps(self.configuration))  # as recorded: tuples become lists
            changed = changed_fields(before, now)
            if not changed:
                return
            shown = [
                f"{name} ({_value_at(before, name)!r} → {_value_at(now, name)!r})" for name in changed[:6]
            ]
            more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
            changes = f"the configuration changed: {', '.join(shown)}{more}"
        raise TrainingError(
            f"{self.resume_path}: refusing to resume an interrupted training of {self.spec.name}: {changes}; "
            "pass --no-resume (gradsum train), --fresh (gradsum run) or resume=False (train_model) to start afresh"
        )

    def train_epoch(self, epoch: int, bar: Any) -> float:
        """One pass over shuffled training batches; returns the mean loss."""
        self.model.train()
        train = self.data["train"]
        config = self.spec.train
        order = torch.randperm(len(train), generator=self.generator)
        total = 0.0
        for batch in range(self.steps_per_epoch):
            index = order[batch * config.batch_size : (batch + 1) * config.batch_size]
            images, target = training_batch(train, index, config.augment, self.generator, str(self.device))
            loss = self.task.loss(self.model(images).reshape(-1).float(), target)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{self.spec.name}: loss is {loss.item()} at epoch {epoch}, batch {batch + 1}; stopped. "
                    f"The last good checkpoint is {self._last_good()}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", refresh=False)
        return total / self.steps_per_epoch

    def _last_good(self) -> str:
        return str(self.best_path) if self.best_path.is_file() else "none (no epoch finished)"

    def fit(self, progress: bool, on_epoch_end: EpochCallback | None) -> None:
        """Train until the epochs run out or validation loss stops improving for `patience` epochs."""
        config = self.spec.train
        state = self.progress
        bar = tqdm(
            total=self.steps_per_epoch * config.epochs,
            initial=self.steps_per_epoch * state.epoch,
            desc=f"train {self.spec.name}",
            disable=None if progress else True,  # None: a bar on a terminal, none in a redirected log
            dynamic_ncols=True,
        )
        with bar:
            for epoch in range(state.epoch + 1, config.epochs + 1):
                if state.bad_epochs >= config.patience:
                    break
                with seeded_module_rng(module_seed(config.seed, epoch), self.device):
                    train_loss = self.train_epoch(epoch, bar)
                val_loss, metrics = evaluate(self.model, self.data["val"], self.task, self.device)
                if not math.isfinite(val_loss):
                    raise TrainingError(
                        f"{self.spec.name}: validation loss is {val_loss} after epoch {epoch}; stopped. "
                        f"The last good checkpoint is {self._last_good()}"
                    )
                headline = metrics[self.task.headline]
                record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
                record[f"val_{self.task.headline}"] = math.nan if headline is None else headline
                state.history.append(record)
                if val_loss < state.best_loss:
                    state.best_loss, state.best_epoch, state.bad_epochs = val_loss, epoch, 0
                    atomic_write_bytes(self.best_path, state_dict_bytes(self.model))
                else:
                    state.bad_epochs += 1
                state.epoch = epoch
                self.save_state()
                bar.set_postfix(
                    epoch=epoch, loss=f"{train_loss:.4f}", **{f"val_{self.task.headline}": headline}
                )
                log.info(
                    "%s epoch %d/%d: train loss %.4f, val loss %.4f, val %s %s",
                    self.spec.name,
                    epoch,
                    config.epochs,
                    train_loss,
                    val_loss,
                    self.task.headline,
                    "n/a" if headline is None else f"{headline:.3f}",
                )
                if on_epoch_end is not None:
                    on_epoch_end(epoch, record)

    def restore_best(self) -> None:
        """Load the best epoch's weights into the model."""
        import safetensors.torch

        self.model.load_state_dict(safetensors.torch.load_file(str(self.best_path), device="cpu"))


def train_model(
    spec: ModelSpec | str | Path,
    truthset: str | Path | Mapping[str, TruthSet],
    task: str | None = None,
    out: str | Path | None = None,
    *,
    device: str | None = None,
    epochs: int | None = None,
    shuffle_labels: bool = False,
    resume: bool = True,
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> ModelCard:
    """Train `spec` on a truth set (folder or split → TruthSet mapping) and write `out/` (weights + card).

    `out` defaults to `models/<spec name>`. An interrupted run resumes from its last finished epoch when
    `resume` is set. With `shuffle_labels`, training and validation targets are permuted (the
    data-randomisation sanity check); test metrics are always against the true targets.
    """
    started = time.perf_counter()
    model_spec = load_spec(spec)
    if epochs is not None:
        model_spec = model_spec.with_train(epochs=epochs)
    task_name = task or model_spec.task
    task_def = TRAINING_TASKS.get(task_name, "--task")
    target = Path(out) if out is not None else Path("models") / model_spec.name
    splits = open_splits(truthset, task_name)
    data = {name: preload(split, task_name, model_spec.img_size) for name, split in splits.items()}
    data = _ensure_val_and_test(data, model_spec.train.seed)
    if shuffle_labels:
        shuffler = torch.Generator().manual_seed(model_spec.train.seed + 1)
        for name in ("train", "val"):
            split = data[name]
            data[name] = SplitData(
                split.images, split.targets[torch.randperm(len(split), generator=shuffler)]
            )
    root = str(truthset) if not isinstance(truthset, Mapping) else "<memory>"
    sizes = {name: len(split) for name, split in data.items()}
    # resolved: the same truth set named by a relative or an absolute path is the same run
    described = _describe(splits["train"], root if root == "<memory>" else str(Path(root).resolve()))
    configuration = run_configuration(model_spec, task_name, sizes, described, shuffle_labels)
    state_dir = state_folder(target)
    if not resume:
        shutil.rmtree(state_dir, ignore_errors=True)
    run_device = resolve_device(device)
    trainer = Trainer(model_spec, task_def, data, state_dir, run_device, configuration)
    if resume:
        trainer.load_state()
    trainer.fit(progress, on_epoch_end)
    trainer.restore_best()
    model = trainer.model.to(run_device)
    _, metrics = evaluate(model, data["test"], task_def, run_device)
    card = card_for(model_spec, task_name)
    card.truthset = _describe(splits["train"], root)
    card.splits = sizes
    card.metrics = metrics
    card.epochs_run = trainer.progress.epoch
    card.best_epoch = trainer.progress.best_epoch
    card.history = trainer.progress.history
    card.shuffled_labels = shuffle_labels
    card.device = str(run_device)
    card.training_seconds = round(time.perf_counter() - started, 2)
    # the folder appears whole or not at all; the resume state goes only once it has
    with atomic_directory(target, overwrite=True) as staging:
        save_model(model.cpu(), card, staging)
    shutil.rmtree(state_dir, ignore_errors=True)
    return card


def _ensure_val_and_test(data: dict[str, SplitData], seed: int) -> dict[str, SplitData]:
    """Carve `val` out of `train` when missing; score on `val` when there is no `test` split."""
    if "val" not in data:
        train = data["train"]
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        cut = max(1, round(len(train) * VAL_FRACTION))
        data["val"], data["train"] = train.subset(order[:cut]), train.subset(order[cut:])
        log.info("no val split: holding out %d training samples for validation", cut)
    if "test" not in data:
        log.warning("no test split: held-out metrics are measured on the validation split")
        data["test"] = data["val"]
    return data


def _describe(split: TruthSet, root: str) -> dict[str, Any]:
    """The truth set as recorded in the card: its root, kind, tasks and generation parameters."""
    described = split.describe()
    described["root"] = root
    described.pop("split", None)
    described.pop("size", None)
    return described
