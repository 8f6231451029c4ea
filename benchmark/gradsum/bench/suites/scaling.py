"""Scaling: time and peak memory of inference and the ViT attribution methods against token count and depth.

Every point is a `build_model("vit", ...)` ViT with patch 16 and the width, heads and MLP of the named
size `deit_tiny` (the issue's `size="deit_tiny"`): 73, 289, 1,153, 2,049 and 8,193 tokens at 12 blocks,
and 4 and 8 blocks at 1,153 tokens. Time is each op's minimum over interleaved calls in this process, divided by the
inference's; peak memory is measured per (op, point) in a fresh interpreter (`attribution._peak_memory`).

At 8,193 tokens (1024×2048) one call may take minutes, so each op runs once there, cold (the smaller
points, measured first in this process, have already run every code path), and only the issue's
large-frame set runs, plus each gated method whose time extrapolated from the smaller points fits
`GATED_BUDGET_S`. Whatever does not run is recorded with its reason, and so is a failed measurement.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullFormatter, StrMethodFormatter
from timm.layers import Mlp
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from gradsum.attribution import METHODS
from gradsum.attribution.methods.lrp_transformer import lxt_module
from gradsum.bench import BenchSuite, timeit
from gradsum.bench.suites.attribution import (
    INFERENCE,
    PEAK_METHOD,
    _interleaved_minimums,
    _operation,
    _peak_memory,
    method_of,
)
from gradsum.errors import AttributionError
from gradsum.models import build_model
from gradsum.report.plots import figure_bytes

log = logging.getLogger(__name__)

#: the named ViT size (`arch.size`) whose width, heads and MLP every point has; the token sweep has its depth
SIZE_NAME = "deit_tiny"
DEPTH = 12
PATCH = 16
#: bytes of one float32 attention weight
FLOAT_BYTES = 4

#: every op measured, in the figure's order; the first is the reference each ratio divides by
OPS = (INFERENCE, "gradcam", "rollout", "gradrollout", "gradrollout_recompute", "chefer_lrp", "attnlrp")
#: methods that need the optional lxt, skipped with the import's message where it is missing
LXT_METHODS = ("attnlrp",)
#: the ops run at a large point: the issue's large-frame set
LARGE_OPS = (INFERENCE, "gradcam", "rollout", "gradrollout", "gradrollout_recompute")
#: also run at a large point when the extrapolated seconds of one call fit GATED_BUDGET_S
GATED_METHODS = ("chefer_lrp",)
GATED_BUDGET_S = 300.0
#: the cost exponent in N assumed when only one smaller point is measured: a chain of N×N matrix products
CUBIC = 3.0

#: the time targets: method ÷ inference at most `limit` at every token count up to TARGET_MAX_TOKENS
TIME_LIMITS = {"rollout": 1.3, "gradrollout": 2.5, "gradrollout_recompute": 2.5, "chefer_lrp": 3.0}
TARGET_MAX_TOKENS = 2049
#: "not growing with N": the log-log slope of a ratio against the token count at most this
GROWTH_SLOPE = 0.1
#: the memory target: peak ≤ MEMORY_HEADROOM × the inference's peak + one block's N×N attention
MEMORY_HEADROOM = 1.5
ATTENTION_METHODS = ("rollout", "gradrollout", "gradrollout_recompute", "chefer_lrp")
#: the large-frame target: these finish one frame, each peak under OOM_LIMIT_BYTES
LARGE_FRAME_METHODS = ("gradcam", "gradrollout")
OOM_LIMIT_BYTES = 24 * 2**30
MIB = 2**20


@functools.cache
def named_shape() -> dict[str, Any]:
    """`build_model("vit", ...)` keywords of SIZE_NAME, read off a built model so they follow `VIT_SIZES`."""
    model = cast(VisionTransformer, build_model("vit", (PATCH, PATCH), patch_size=PATCH, size=SIZE_NAME))
    first = cast(Block, model.blocks[0])
    hidden = cast(nn.Linear, cast(Mlp, first.mlp).fc1).out_features
    return {
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": cast(Attention, first.attn).num_heads,
        "mlp_ratio": hidden / model.embed_dim,
    }


def token_count(image_size: tuple[int, int]) -> int:
    """Patch tokens plus the class token of the ViT at `image_size`."""
    return (image_size[0] // PATCH) * (image_size[1] // PATCH) + 1


@dataclass(frozen=True)
class Point:
    """One measured configuration of the DeiT-tiny-size ViT; `large`: one cold call per op, LARGE_OPS only."""

    image_size: tuple[int, int]
    batch: int
    depth: int
    large: bool = False

    @property
    def tokens(self) -> int:
        """Patch tokens plus the class token."""
        return token_count(self.image_size)

    @property
    def attention_bytes(self) -> int:
        """One block's N×N attention in float32: B·heads·N²·4."""
        return self.batch * named_shape()["num_heads"] * self.tokens**2 * FLOAT_BYTES

    def vit(self) -> dict[str, Any]:
        """`build_model("vit", image_size, **vit())`'s keywords."""
        return {**named_shape(), "depth": self.depth, "patch_size": PATCH}


@dataclass(frozen=True)
class Grid:
    """The points in measuring order (a large point after those its gate extrapolates from) and the ops."""

    points: tuple[Point, ...]
    ops: tuple[str, ...]
    repeats: int
    #: the depth of the token sweep and the image size of the depth sweep, for the targets and the figure
    token_sweep_depth: int
    depth_sweep_size: tuple[int, int]


DEPTH_SWEEP_SIZE = (384, 768)
FULL = Grid(
    points=(
        Point((96, 192), 8, DEPTH),
        Point((192, 384), 1, DEPTH),
        Point(DEPTH_SWEEP_SIZE, 1, DEPTH),
        Point(DEPTH_SWEEP_SIZE, 1, 4),
        Point(DEPTH_SWEEP_SIZE, 1, 8),
        Point((512, 1024), 1, DEPTH),
        Point((1024, 2048), 1, DEPTH, large=True),
    ),
    ops=OPS,
    repeats=3,
    token_sweep_depth=DEPTH,
    depth_sweep_size=DEPTH_SWEEP_SIZE,
)
#: each (op, point) costs a fresh interpreter (seconds): two points, two ops
QUICK = Grid(
    points=(Point((96, 192), 2, 2), Point((192, 384), 1, 2, large=True)),
    ops=(INFERENCE, "gradrollout"),
    repeats=1,
    token_sweep_depth=2,
    depth_sweep_size=(96, 192),
)


def extrapolate(measured: Sequence[tuple[int, float]], tokens: int) -> float:
    """Seconds at `tokens` from (tokens, seconds) pairs: the power law through the two with most tokens, or
    N³ from a single pair."""
    ordered = sorted(measured)
    if not ordered:
        raise ValueError("measured: no (tokens, seconds) pair to extrapolate from")
    most, seconds = ordered[-1]
    exponent = CUBIC
    if len(ordered) > 1:
        fewer, fewer_seconds = ordered[-2]
        # no method costs less than linear in N; timing noise between close points can say otherwise
        exponent = max(math.log(seconds / fewer_seconds) / math.log(most / fewer), 1.0)
    return seconds * (tokens / most) ** exponent


def _unavailable(op: str) -> str | None:
    """Why `op` cannot run here, or None."""
    if op == INFERENCE:
        return None
    if method_of(op) not in METHODS:
        return f"skipped: method {method_of(op)} is not registered"
    if op in LXT_METHODS:
        try:
            lxt_module("rules", op)
        except AttributionError as error:
            return f"skipped: {error}"
    return None


def _gate(op: str, point: Point, earlier: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether gated `op` runs at large `point`: its per-frame seconds at the earlier points of the same
    depth, extrapolated to the point's tokens, against GATED_BUDGET_S."""
    measured = [
        (record["tokens"], record["ops"][op]["seconds"] / record["batch"])
        for record in earlier
        if record["depth"] == point.depth and not record["large"] and "seconds" in record["ops"][op]
    ]
    if not measured:
        return {"run": False, "why": f"skipped: no smaller point of depth {point.depth} timed {op}"}
    estimate = extrapolate(measured, point.tokens) * point.batch
    run = estimate <= GATED_BUDGET_S
    verdict = "within" if run else "over"
    return {
        "run": run,
        "estimated_seconds": estimate,
        "budget_seconds": GATED_BUDGET_S,
        "why": f"{'run' if run else 'skipped'}: estimated {estimate:.0f} s per call, {verdict} the "
        f"{GATED_BUDGET_S:.0f} s budget (extrapolated from {len(measured)} smaller point(s))",
    }


def _plan(
    point: Point, ops: Sequence[str], earlier: Sequence[dict[str, Any]]
) -> tuple[list[str], dict[str, Any]]:
    """The ops to run at `point`, and per op not run (or gated) why."""
    run: list[str] = []
    why: dict[str, Any] = {}
    for op in ops:
        reason = _unavailable(op)
        if reason is None and point.large and op in GATED_METHODS:
            why[op] = _gate(op, point, earlier)
            reason = None if why[op]["run"] else why[op]["why"]
        elif reason is None and point.large and op not in LARGE_OPS:
            reason = (
                f"skipped: not run at {point.tokens:,} tokens (the large-frame set is {', '.join(LARGE_OPS)})"
            )
        if reason is None:
            run.append(op)
        else:
            why[op] = reason
    return run, why


def _seconds(point: Point, ops: Sequence[str], repeats: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model("vit", point.image_size, **point.vit()).to(device).eval()
    images = torch.rand(point.batch, 3, *point.image_size, device=device)
    calls = {op: _operation(op, model, images) for op in ops}
    if point.large:
        return {op: timeit(call, repeats=1, warmup=0) for op, call in calls.items()}
    return _interleaved_minimums(calls, repeats)


def _failure(error: subprocess.CalledProcessError) -> str:
    if error.returncode < 0:
        name = signal.Signals(-error.returncode).name
        return f"failed: killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    lines = (error.stderr or "").strip().splitlines()
    return f"failed: exit {error.returncode}: {lines[-1] if lines else 'no message'}"


def _peak(op: str, point: Point, device: str) -> float | str:
    """Peak bytes of `op` at `point` in a fresh interpreter, or why the measurement failed."""
    calls = {"warmup": 0, "calls": 1} if point.large else {}
    try:
        return _peak_memory(op, point.batch, device, size=point.image_size, vit=point.vit(), **calls)
    except subprocess.CalledProcessError as error:
        return _failure(error)


def _mib(peak: float | str) -> str:
    return f"peak {peak / MIB:.0f} MiB" if isinstance(peak, float) else peak


def _measure(point: Point, grid: Grid, device: str, earlier: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One point's record: per op its seconds, ratio to inference, peak bytes and memory ratio, or why not."""
    ops, why = _plan(point, grid.ops, earlier)
    seconds = _seconds(point, ops, grid.repeats, device)
    peaks = {op: _peak(op, point, device) for op in ops}
    reference = peaks.get(INFERENCE)
    budget = MEMORY_HEADROOM * reference + point.attention_bytes if isinstance(reference, float) else None
    figures: dict[str, Any] = {}
    for op in grid.ops:
        if op not in ops:
            figures[op] = {"skipped": why[op]}
            continue
        peak = peaks[op]
        figures[op] = {
            "seconds": seconds[op],
            "ratio": seconds[op] / seconds[INFERENCE],
            "peak_bytes": peak if isinstance(peak, float) else None,
            "peak_ratio": peak / budget if isinstance(peak, float) and budget is not None else None,
        }
        if isinstance(peak, str):
            figures[op]["peak_failed"] = peak
        if isinstance(why.get(op), dict):
            figures[op]["gate"] = why[op]
    record = {
        "tokens": point.tokens,
        "depth": point.depth,
        "batch": point.batch,
        "image_size": list(point.image_size),
        "large": point.large,
        "attention_bytes": point.attention_bytes,
        "ops": figures,
    }
    # a full run takes long on a small CPU: each point's figures are logged as they come
    log.info(
        "scaling: %d tokens, depth %d: %s",
        point.tokens,
        point.depth,
        ", ".join(f"{op} {seconds[op]:.3g} s, {_mib(peaks[op])}" for op in ops),
    )
    return record


# --- targets -----------------------------------------------------------------------------------------


def _loglog_slope(pairs: Sequence[tuple[int, float]]) -> float:
    x, y = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(x, y, 1)[0])


def _time_target(method: str, limit: float, records: Sequence[dict[str, Any]], depth: int) -> dict[str, Any]:
    sweep = [
        r for r in records if r["depth"] == depth and not r["large"] and r["tokens"] <= TARGET_MAX_TOKENS
    ]
    ratios = [{"tokens": r["tokens"], "ratio": r["ops"][method].get("ratio")} for r in sweep]
    measured = [(row["tokens"], row["ratio"]) for row in ratios if row["ratio"] is not None]
    slope = _loglog_slope(measured) if len(measured) > 1 else None
    complete = bool(ratios) and len(measured) == len(ratios)
    return {
        "target": f"{method} ÷ inference ≤ {limit} at every token count up to {TARGET_MAX_TOKENS:,}, not "
        f"growing with N (log-log slope ≤ {GROWTH_SLOPE})",
        "ratios": ratios,
        "slope": slope,
        "met": complete
        and all(ratio <= limit for _, ratio in measured)
        and slope is not None
        and slope <= GROWTH_SLOPE,
    }


def _memory_target(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ratios, missing = [], []
    for record in records:
        for method in ATTENTION_METHODS:
            figures = record["ops"][method]
            where = {"method": method, "tokens": record["tokens"], "depth": record["depth"]}
            if figures.get("peak_ratio") is None:
                missing.append({**where, "why": figures.get("skipped") or figures.get("peak_failed")})
            else:
                ratios.append({**where, "ratio": figures["peak_ratio"]})
    worst = max(ratios, key=lambda row: row["ratio"]) if ratios else None
    return {
        "target": f"peak of {', '.join(ATTENTION_METHODS)} ≤ {MEMORY_HEADROOM} × inference peak + one block's "
        "N×N attention (ratio ≤ 1) at every point",
        "worst": worst,
        "missing": missing,
        "met": not missing and worst is not None and worst["ratio"] <= 1.0,
    }


def _large_frame_target(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    absent = {"skipped": "not in this grid"}
    rows = [
        {"method": method, "tokens": r["tokens"], **r["ops"].get(method, absent)}
        for r in records
        if r["large"]
        for method in LARGE_FRAME_METHODS
    ]
    return {
        "target": f"{' and '.join(LARGE_FRAME_METHODS)} finish one large frame, peak < "
        f"{OOM_LIMIT_BYTES / 2**30:.0f} GiB",
        "runs": rows,
        "met": bool(rows)
        and all(row.get("seconds") is not None for row in rows)
        and all(row.get("peak_bytes") is not None and row["peak_bytes"] < OOM_LIMIT_BYTES for row in rows),
    }


def targets(records: Sequence[dict[str, Any]], grid: Grid) -> dict[str, Any]:
    """Each target of the issue with its figures and whether it is met."""
    found: dict[str, Any] = {
        f"{method}_time": _time_target(method, limit, records, grid.token_sweep_depth)
        for method, limit in TIME_LIMITS.items()
        if method in grid.ops
    }
    if set(ATTENTION_METHODS) <= set(grid.ops):
        found["attention_memory"] = _memory_target(records)
    found["large_frame"] = _large_frame_target(records)
    return found


def run(quick: bool, device: str) -> dict[str, Any]:
    """Time and memory per op at every point of the grid (quick: two tiny points, two ops)."""
    grid = QUICK if quick else FULL
    records: list[dict[str, Any]] = []
    for point in grid.points:
        records.append(_measure(point, grid, device, records))
    return {
        "model": {"architecture": "vit", "size": SIZE_NAME, **named_shape(), "depth": "per point"},
        "inference": "the model's forward under torch.inference_mode, timm's default fused attention",
        "time_method": f"minimum over {grid.repeats} interleaved rounds after a warm-up round; large points: "
        "one cold call per op",
        "peak_method": f"{PEAK_METHOD}; large points: one cold call",
        "ops": list(grid.ops),
        "token_sweep_depth": grid.token_sweep_depth,
        "depth_sweep_tokens": token_count(grid.depth_sweep_size),
        "points": records,
        "targets": targets(records, grid),
    }


# --- figure ------------------------------------------------------------------------------------------


def _series(
    records: Sequence[dict[str, Any]], op: str, x: str, y: str, scale: float
) -> tuple[list[float], list[float]]:
    pairs = sorted((r[x], r["ops"][op][y] / scale) for r in records if r["ops"][op].get(y) is not None)
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _panel(
    axes: Axes, records: Sequence[dict[str, Any]], ops: Sequence[str], x: str, y: str, scale: float = 1.0
) -> None:
    for index, op in enumerate(ops):
        xs, ys = _series(records, op, x, y, scale)
        if xs:
            axes.plot(xs, ys, marker="o", color=f"C{index}", label=op)
    axes.set_xticks(sorted({r[x] for r in records}))
    axes.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axes.xaxis.set_minor_formatter(NullFormatter())
    if axes.get_yscale() == "log":  # plain numbers, minor ticks labelled where a decade is not spanned
        axes.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axes.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    axes.grid(True, which="both", alpha=0.3)


def draw(figures: dict[str, Any]) -> bytes:
    """The suite's figure as PNG: time ratio and peak memory against tokens, time ratio against depth."""
    ops: list[str] = figures["ops"]
    points: list[dict[str, Any]] = figures["points"]
    tokens = [r for r in points if r["depth"] == figures["token_sweep_depth"]]
    depths = [r for r in points if r["tokens"] == figures["depth_sweep_tokens"]]
    fig = Figure(figsize=(16, 4.8))
    ratio_axes, memory_axes, depth_axes = fig.subplots(1, 3)
    for axes in (ratio_axes, memory_axes):
        axes.set(xscale="log", yscale="log", xlabel="tokens")
    _panel(ratio_axes, tokens, ops, "tokens", "ratio")
    for index, op in enumerate(ops):
        if op in TIME_LIMITS:
            ratio_axes.axhline(TIME_LIMITS[op], color=f"C{index}", linestyle=":", linewidth=1)
    ratio_axes.set(ylabel="seconds ÷ inference")
    ratio_axes.set_title(f"time ratio, {figures['token_sweep_depth']} blocks (dotted: targets)")
    _panel(memory_axes, tokens, ops, "tokens", "peak_bytes", MIB)
    bound = [
        (r["tokens"], (MEMORY_HEADROOM * r["ops"][INFERENCE]["peak_bytes"] + r["attention_bytes"]) / MIB)
        for r in tokens
        if r["ops"][INFERENCE].get("peak_bytes") is not None
    ]
    if bound:
        xs, ys = zip(*sorted(bound), strict=True)
        label = f"target: {MEMORY_HEADROOM} × inference + one block's N×N"
        memory_axes.plot(xs, ys, color="black", linestyle="--", label=label)
    memory_axes.set(ylabel="peak MiB above the model's baseline")
    memory_axes.set_title(f"peak memory, {figures['token_sweep_depth']} blocks")
    memory_axes.legend(fontsize="small")
    _panel(depth_axes, depths, ops, "depth", "ratio")
    depth_axes.set(xlabel="blocks", ylabel="seconds ÷ inference")
    depth_axes.set_title(f"time ratio, {figures['depth_sweep_tokens']:,} tokens")
    fig.tight_layout()
    return figure_bytes(fig, "png")


SUITE = BenchSuite(
    "scaling",
    "time and peak memory of inference and the ViT attribution methods against token count and depth",
    run,
    draw,
)
