"""Data-parallel training over processes: PyTorch's own engine, launched by torchrun.

``train.<family>.nproc: N`` (> 1) makes the train stage re-launch itself through
``torch.distributed.run --nproc-per-node N`` (the process is replaced, so signals and the
exit status are torchrun's), and dvc.yaml's command stays the same. Every rank runs the
same code on its share of each batch; DistributedDataParallel averages the gradients; rank 0
alone reads resume state (and broadcasts it) and writes checkpoints, metrics and dvclive.

Several machines: set ``KILN_TORCHRUN_ARGS`` to torchrun's rendezvous options (e.g.
``--nnodes 2 --node-rank 0 --master-addr head --master-port 29500``) on each machine; they
replace the single-machine ``--standalone``. Or start torchrun yourself: a stage already
under torchrun (``LOCAL_RANK`` set) never re-launches.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from stages.common.errors import StageError

LAUNCH_ARGS_ENV = "KILN_TORCHRUN_ARGS"
# a rank waiting on a dead peer fails after this; torchrun's agent normally ends it sooner
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    rank: int = 0        # global rank
    size: int = 1        # processes in all
    local_rank: int = 0  # rank on this machine: its GPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(nproc: int, module: str, argv: list[str]) -> list[str]:
    """``python -m torch.distributed.run ... -m module argv``: one machine unless
    KILN_TORCHRUN_ARGS names a rendezvous."""
    rendezvous = shlex.split(os.environ.get(LAUNCH_ARGS_ENV, "")) or ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}",
            "-m", module, *argv]


def relaunch(nproc: int, module: str, argv: list[str]) -> None:
    """Replace this process with torchrun running ``module`` on ``nproc`` ranks (never returns).
    Each rank gets cores / nproc threads unless OMP_NUM_THREADS says otherwise: ranks
    sharing the cores must not each start one thread per core."""
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = torchrun_command(nproc, module, argv)
    print(f"kiln: {nproc} processes: {' '.join(command[1:])}", flush=True)
    sys.stderr.flush()
    os.execv(command[0], command)


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); alone: SINGLE."""
    if not under_torchrun():
        return SINGLE, device
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise StageError(f"rank {world.rank}: local rank {world.local_rank} but {torch.cuda.device_count()} "
                             "GPU(s) here: nproc must not exceed the GPUs per machine")
        torch.cuda.set_device(world.local_rank)
        device = torch.device("cuda", world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return world, device


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(obj, world: World):
    """Rank 0's ``obj`` on every rank (pickled: resume state, a probe's head, a log row)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: World) -> list | None:
    """Every rank's ``obj``, in rank order, on rank 0; None elsewhere."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size if world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def sum_over_ranks(values: list[float], world: World, device: torch.device) -> list[float]:
    """Element-wise sums over ranks (float64: image counts stay exact)."""
    if not world.distributed:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def max_over_ranks(value: float, world: World, device: torch.device) -> float:
    if not world.distributed:
        return value
    top = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return top.item()


def sync_buffers(model: nn.Module, world: World) -> None:
    """Rank 0's batch-norm statistics everywhere: each rank updated its own during the last
    step, and validation must score the model rank 0 checkpoints."""
    if world.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def data_parallel(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (gradients averaged over ranks), or as is.
    Wrap again after (un)freezing parameters: DDP reduces only those trainable when wrapped."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
