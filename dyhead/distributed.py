"""Joining a torchrun process group: the one helper used by training and the dataset passes.

Under ``torchrun --nproc-per-node K ...`` every process has RANK, WORLD_SIZE and LOCAL_RANK in its
environment. `join_process_group` joins the group (NCCL with one GPU per process when CUDA is used,
gloo on the CPU) and returns this process's place in it and its device; without torchrun it returns
rank 0 of 1 and the resolved device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .device import resolve_device

__all__ = ["DistInfo", "join_process_group", "rank_and_world"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the joined group, else from torchrun's variables, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def join_process_group(device_name: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join torchrun's process group (if any) -> (DistInfo, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and str(device_name) != "cpu":
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world, local_rank), device
