"""PyTorch's own distributed engine for training under torchrun: process group, device, collectives.

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op for one process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from textae.errors import TextaeError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (decisions such as early stopping must agree)."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def on_main(self, action: Callable[[], Any]) -> None:
        """Run action on rank 0 and let every rank raise its user error, so no rank waits forever."""
        error = None
        if self.is_main:
            try:
                action()
            except TextaeError as exc:
                error = str(exc)
        error = self.broadcast(error)
        if error:
            raise TextaeError(error)

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return float(tensor.item())


def start(device: str = "auto") -> Workers:
    """Join the torchrun process group if there is one, and pick this process's device."""
    if device not in DEVICES:
        raise TextaeError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise TextaeError("--device cuda asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Workers(device=torch.device("cuda") if use_cuda else torch.device("cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun's agent, which is our parent
        exit_when_launcher_dies()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Workers(rank, world_size, local_rank, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def exit_when_launcher_dies(poll_seconds: float = 0.5) -> threading.Thread:
    """End this process when its parent (torchrun's agent) is gone.

    torchrun starts each worker in a session of its own, so killing torchrun, or its process group
    as a crash or an out-of-memory kill does, leaves the workers training on as orphans: they go on
    rewriting the run folder's checkpoint while `textae train --resume` starts a second set on it.
    A worker whose launcher died exits at once, without cleanup, as a kill would: every file is
    written atomically, so the folder is as a kill leaves it and --resume continues from it.
    """
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(poll_seconds)
        os._exit(1)

    watcher = threading.Thread(target=watch, name="textae-launcher-watch", daemon=True)
    watcher.start()
    return watcher


def stop(workers: Workers) -> None:
    if workers.distributed and dist.is_initialized():
        dist.destroy_process_group()
