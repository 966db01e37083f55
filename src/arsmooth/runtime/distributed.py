"""Multi-process training with PyTorch's own engine: ``torch.distributed`` + DistributedDataParallel.

``arsmooth train`` runs unchanged under ``torchrun`` (the way nanoGPT does it): the process group is
set up from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...),
gloo on CPU and nccl on CUDA. Without those variables everything here is a no-op (one process).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ArsmoothError


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owner: bool = False  # this context created the process group, and its shutdown destroys it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str | None = "auto") -> torch.device:
    """The device a command runs its networks on: ``auto`` (this machine's GPU when torch sees one, else the
    CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under torchrun, ``auto`` and ``cuda`` are this process's own GPU
    (``LOCAL_RANK``). A GPU asked for where none is visible is refused with one line."""
    name = (name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ArsmoothError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if not torch.cuda.is_available():
        raise ArsmoothError(f"--device {name} was asked for but no CUDA GPU is visible to torch; use --device cpu")
    if name == "cuda":
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    if int(name[5:]) >= torch.cuda.device_count():
        raise ArsmoothError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(name)


def device_of(module) -> torch.device:
    """The device a model's parameters live on."""
    return next(module.parameters()).device


def setup(device_type: str) -> Context:
    """Join torchrun's process group if launched by it; else one process.

    A group that already exists is used as it is (and left to its creator to destroy): a process cannot
    set up a second group after destroying the first under torchrun's shared store, so a command made of
    several steps (``reproduce``: three trainings, then sampling) sets the group up once around them.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
                  owner=not dist.is_initialized())
    if ctx.owner:
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        try:
            dist.init_process_group(backend=backend)
        except RuntimeError as e:
            if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0") and \
                    os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") != "1":
                # torchrun's agent shares its rendezvous store with the workers by default, and a restarted
                # group can read the previous attempt's addresses (pytorch/pytorch issue 135712)
                raise ArsmoothError("the restarted process group could not connect; launch torchrun with "
                                    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 set when using --max-restarts") from e
            raise
    return ctx


def is_main_process() -> bool:
    """Whether this process is rank 0 of a torchrun group, or runs alone (no group needed to tell)."""
    return int(os.environ.get("RANK", "0")) == 0


def mean(ctx: Context, value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a scalar tensor (the value itself in one process)."""
    if not ctx.enabled:
        return value
    v = value.detach().clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v / ctx.world


def agree(ctx: Context, flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (so that all ranks stop at the same step)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def check_all(ctx: Context, ok: bool, message: str, device: torch.device) -> None:
    """Raise on every rank when any rank failed (so no rank waits forever for the others)."""
    if not ctx.enabled:
        return
    t = torch.tensor([0 if ok else 1], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    if t.item() and ok:
        raise ArsmoothError(message)


def my_share(ctx: Context, n_items: int) -> range:
    """The items this rank handles when ``n_items`` are dealt round-robin: ``rank, rank + world, ...``."""
    return range(ctx.rank, n_items, ctx.world)


def gather_on_main(ctx: Context, items: dict) -> dict | None:
    """Every rank's ``{index: value}`` merged on rank 0 (None on the other ranks; the dict itself in one process)."""
    if not ctx.enabled:
        return items
    parts = [None] * ctx.world if ctx.main else None
    dist.gather_object(items, parts, dst=0)
    if not ctx.main:
        return None
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Context, clean: bool = True) -> None:
    """Leave the process group cleanly.

    With gloo on torch 2.13 a correct run can abort at exit (SIGABRT) when the DDP model and optimizer
    still exist as the group is destroyed; callers drop their references first, then we collect
    garbage, wait for every rank and only then destroy the group.
    """
    if not ctx.enabled or not dist.is_initialized():
        return
    gc.collect()
    if clean:  # after an error the other ranks may never arrive
        dist.barrier()
    if ctx.owner:
        dist.destroy_process_group()
