"""Which device, and multi-process training under `torchrun`: who am I and the process group.

`torchrun --nproc_per_node=N ...` sets RANK, WORLD_SIZE and LOCAL_RANK; without them
training runs as a single process and nothing here does anything.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import DeviceUnavailable


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, samples, validates, writes checkpoints and talks to MLflow."""
        return self.rank == 0


def context() -> DistContext:
    env = os.environ
    return DistContext(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def select_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"train.device: {requested!r}, but this machine has no CUDA GPU; set train.device to auto or cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceUnavailable(
            f"train.device: {requested!r}, but this machine has {torch.cuda.device_count()} GPU(s) (cuda:0 ..); "
            "pick one of them, or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(
            f"train.device: {requested!r}, but MPS is not available here; set train.device to auto or cpu"
        )
    return device


def setup(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(shutdown)
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if `flag` is true on one (a stop request must stop all in step)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
