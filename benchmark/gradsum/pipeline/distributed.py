"""Runs spread over processes and machines with PyTorch's own engine (`torchrun`, `torch.distributed`).

`torchrun --nproc_per_node=N -m gradsum run ...` sets RANK, WORLD_SIZE and the rendezvous variables; a
plain `gradsum run` is a world of one and never touches `torch.distributed`. Ranks split the split's
shards round-robin (shard k goes to rank k mod N), so no image is attributed twice or skipped, and each
rank's per-image rows reach rank 0 through `gather_object`, which needs no shared file system.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

#: How long ranks wait for each other at a collective: rank 0 may train a missing model first.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    #: the rank's GPU on its machine (torchrun's LOCAL_RANK)
    local_rank: int = 0
    #: the process group's backend (nccl reduces CUDA tensors only)
    backend: str = "gloo"

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.size > 1

    @property
    def leader(self) -> bool:
        """True on the process that writes the shared outputs (profiles, trust tables, report)."""
        return self.rank == 0

    def owns(self, shard: int) -> bool:
        """Whether this rank computes `shard` (round-robin over ranks)."""
        return shard % self.size == self.rank

    def device(self, configured: str) -> str:
        """The device this rank uses: its own GPU of the machine when the run is on CUDA."""
        if configured == "cuda" and self.distributed:
            return f"cuda:{self.local_rank}"
        return configured

    def barrier(self) -> None:
        """Wait for every rank (no-op in a world of one)."""
        if self.distributed:
            dist.barrier()

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's `value` on rank 0 (in rank order), None on the others."""
        if not self.distributed:
            return [value]
        gathered: list[Any] | None = [None] * self.size if self.leader else None
        dist.gather_object(value, gathered, dst=0)
        return gathered

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over ranks (float64 and int64 sums are exact in any order)."""
        if not self.distributed:
            return tensor
        if self.backend == "nccl":
            on_gpu = tensor.to(f"cuda:{self.local_rank}")
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            return on_gpu.to(tensor.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def world_from_environment() -> World:
    """The world torchrun describes in the environment, or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(
        rank=int(os.environ.get("RANK", "0")),
        size=size,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def backend_for(device: str) -> str:
    """nccl between GPUs, gloo between CPUs."""
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def joined(device: str) -> Iterator[World]:
    """Join the process group torchrun set up (when there is one) for the duration of a run."""
    world = world_from_environment()
    if not world.distributed or dist.is_initialized():
        yield world
        return
    world = dataclasses.replace(world, backend=backend_for(device))
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(world.backend, timeout=COLLECTIVE_TIMEOUT)
    log.info("rank %d of %d joined (%s)", world.rank, world.size, world.backend)
    try:
        yield world
    finally:
        dist.destroy_process_group()
