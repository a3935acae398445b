"""DistributedDataParallel plumbing: the same `fit` runs alone or under `torchrun`.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 training joins a process
group (gloo on the CPU, nccl on CUDA) and only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from visionline.errors import TrainingError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly one-process) training job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_context() -> DistContext:
    """Read torchrun's environment; a plain process is rank 0 of 1."""
    try:
        return DistContext(
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError as exc:
        raise TrainingError(
            f"WORLD_SIZE/RANK/LOCAL_RANK are not integers ({exc}); launch with torchrun."
        ) from exc


def resolve_device(requested: str, ctx: DistContext) -> torch.device:
    """`auto` → CUDA when present, else the CPU; each DDP rank takes its own GPU."""
    cuda = torch.cuda.is_available()
    if requested == "cuda" and not cuda:
        raise TrainingError(
            "--device cuda was requested but no CUDA GPU is visible; use --device auto or cpu."
        )
    if requested == "cpu" or not cuda:
        return torch.device("cpu")
    if ctx.enabled:
        if ctx.local_rank >= torch.cuda.device_count():
            raise TrainingError(
                f"Rank {ctx.rank} wants GPU {ctx.local_rank} but only {torch.cuda.device_count()} exist; "
                "lower torchrun --nproc_per_node."
            )
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cuda")


def init_process_group(ctx: DistContext, device: torch.device) -> bool:
    """Join the job's process group; True when this call created it (and must destroy it)."""
    if not ctx.enabled or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's batch-norm statistics everywhere, so every rank evaluates the same model."""
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(value: Any, ctx: DistContext) -> Any:
    """Rank 0's `value` on every rank (used for decisions such as early stopping)."""
    if not ctx.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
