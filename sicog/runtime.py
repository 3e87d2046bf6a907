"""The process's place in a run: its `torchrun` rank and the device it computes on.

The bottom of the package's layering (it imports nothing of `sicog`): every command reads the
torchrun variables and resolves `--device` here, the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int


def rank_info() -> RankInfo:
    """This process's place in a `torchrun` job, from RANK / WORLD_SIZE / LOCAL_RANK (1 process when
    unset; LOCAL_RANK defaults to RANK). ValueError naming the variables when they are malformed."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise ValueError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return RankInfo(rank, world, local)


def resolve_device(spec: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """The device a `--device` value names.

    "auto" (or None): `cuda:LOCAL_RANK` when CUDA is available, else cpu; "cuda": `cuda:LOCAL_RANK`
    (modulo the visible GPUs); anything else (cpu, cuda:1, ...) as given. `local_rank` defaults to
    this process's LOCAL_RANK.
    """
    import torch  # here, so that reading the rank does not load torch

    if isinstance(spec, torch.device):
        return spec
    spec = spec or "auto"
    if spec not in ("auto", "cuda"):
        return torch.device(spec)
    if spec == "cuda" or torch.cuda.is_available():
        local = rank_info().local_rank if local_rank is None else local_rank
        return torch.device(f"cuda:{local % max(torch.cuda.device_count(), 1)}")
    return torch.device("cpu")


def to_device(value, device: "torch.device"):
    """`value` moved to `device`: tensors and anything with `.to` (an ImageInput), inside lists, tuples
    and dicts; anything else (None, ints, strings) as is."""
    if hasattr(value, "to"):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
