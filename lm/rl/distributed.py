"""Data parallelism with torch.distributed: N processes, one model copy each, gradients averaged.

Each process (a "rank") holds the whole model, works on its own share of the batch and, after
`backward`, the ranks average their gradients with an all-reduce, so every rank takes the same
optimizer step and the copies stay identical:

    rank r:  loss_r = mean over its B/N sequences  ->  grad_r
    all:     grad = (grad_0 + ... + grad_{N-1}) / N  = the gradient of the mean over all B sequences

We average the gradients ourselves (`all_reduce_gradients`: flatten them into a few large buckets,
one all-reduce per bucket) rather than wrap the model in DistributedDataParallel: a GRPO step
runs no-grad generation and several forward passes of the same model between updates, which DDP's
hooks (fire on every backward, need `no_sync` elsewhere) make harder to read, and the explicit
all-reduce is exactly the one line of mathematics above. `broadcast_parameters` makes the copies
equal at the start; `parameters_identical` checks it again later (after the first step and at
every checkpoint).

Launch: `torchrun --nproc_per_node=N -m lm.rl.grpo ...` (gloo on CPU, nccl on CUDA; torchrun sets
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), or `spawn(fn, N, ...)` from Python (what the
grpo_ddp stage does). If one rank raises, the launcher stops the others and the job fails with
that rank's error; a collective waits at most `timeout_s`.
"""
from __future__ import annotations

import datetime
import os
import pickle
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lm.errors import ConfigError

BUCKET_BYTES = 25 * 2**20          # gradients are all-reduced in buckets of about this size


@dataclass
class Dist:
    """Who this process is: its rank, how many ranks there are, and its device."""
    rank: int = 0                  # 0 .. world - 1; rank 0 logs and writes checkpoints
    world: int = 1                 # number of processes
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous of a local job."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(rank: int, world: int, device: str | None = None, timeout_s: float = 300.0) -> Dist:
    """Join the process group (gloo on CPU, nccl on CUDA); a single process needs none."""
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", rank % torch.cuda.device_count())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank, world, dev)


def environment() -> tuple[int, int]:
    """(rank, world) from the launcher's RANK / WORLD_SIZE variables (torchrun, or `spawn`'s
    workers); a plain `python` run is rank 0 of 1."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError(f"RANK={os.environ.get('RANK')!r} and WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                          "must be integers") from None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} must be in 0 .. WORLD_SIZE-1 (WORLD_SIZE={world})")
    return rank, world


def init_from_env(device: str | None = None, timeout_s: float = 300.0) -> Dist:
    """`init` from torchrun's RANK / WORLD_SIZE variables (a plain `python` run is rank 0 of 1)."""
    return init(*environment(), device, timeout_s)


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.barrier()               # no rank tears down gloo while another still talks to it
        dist.destroy_process_group()


@torch.no_grad()
def broadcast_parameters(model: torch.nn.Module, d: Dist) -> None:
    """Copy rank 0's parameters to every rank."""
    if d.active:
        for p in model.parameters():
            dist.broadcast(p.data, src=0)


@torch.no_grad()
def all_reduce_gradients(params: Sequence[torch.nn.Parameter], d: Dist) -> None:
    """Replace every gradient by its mean over the ranks, a few large buckets at a time."""
    if not d.active:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for g in (p.grad for p in params if p.grad is not None):
        if bucket and (g.dtype != bucket[0].dtype or size >= BUCKET_BYTES):
            _reduce_bucket(bucket, d)
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    if bucket:
        _reduce_bucket(bucket, d)


def _reduce_bucket(bucket: list[torch.Tensor], d: Dist) -> None:
    flat = torch.cat([t.reshape(-1) for t in bucket])                          # (n,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= d.world
    offset = 0
    for t in bucket:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def barrier(d: Dist) -> None:
    """Wait until every rank gets here."""
    if d.active:
        dist.barrier()


def all_sum(values: Sequence[float], d: Dist) -> list[float]:
    """Sum a few numbers over the ranks (for logging global means)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=d.device)
    if d.active:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


@torch.no_grad()
def parameters_identical(model: torch.nn.Module, d: Dist) -> bool:
    """True if every rank holds exactly the same parameters (compared through rank 0's copy)."""
    if not d.active:
        return True
    same = torch.ones(1, device=d.device)
    for p in model.parameters():
        ref = p.data.clone()
        dist.broadcast(ref, src=0)
        if not torch.equal(ref, p.data):
            same.zero_()
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    fn(rank, world, *args)
    # The rank's work is done and written. Leave without the interpreter's teardown: gloo's C++
    # threads can still be joinable when static destructors run, which aborts a finished rank
    # now and then ("terminate called without an active exception", SIGABRT) and fails the job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn(fn: Callable, nprocs: int, *args) -> None:
    """Run `fn(rank, world, *args)` in `nprocs` fresh processes on this machine and wait for all.

    `fn` must be importable (a module-level function). If a rank raises, the others are stopped
    and this raises `torch.multiprocessing.ProcessRaisedException` with that rank's traceback.
    Interrupted itself (KeyboardInterrupt, or run_all.py's SIGTERM), it stops the ranks first.
    """
    if nprocs < 1:
        raise ConfigError(f"nprocs must be >= 1, got {nprocs}")
    ctx = mp.spawn(_worker, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=False)
    try:
        while not ctx.join():
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
        first = _first_raised(ctx.error_files)
        if first is None or first == e.error_index:
            raise
        # torch reports whichever process it saw exit first; a peer that died in a collective
        # because this rank raised is a consequence, so name the rank that raised first
        with open(ctx.error_files[first], "rb") as f:
            trace = pickle.load(f)                 # our own child's traceback string, not user data
        raise mp.ProcessRaisedException(f"\n\n-- Process {first} terminated with the following error:\n{trace}",
                                        first, ctx.processes[first].pid) from None
    except BaseException:        # Ctrl-C or SIGTERM here (run_all.py raises for both): stop the ranks too,
        for p in ctx.processes:  # or this process would wait for them at exit
            if p.is_alive():
                p.terminate()
        for p in ctx.processes:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()
        raise


def _first_raised(error_files: Sequence[str]) -> int | None:
    """The rank whose Python exception was written first (torch writes one file per raising rank)."""
    written = [(os.path.getmtime(f), i) for i, f in enumerate(error_files)
               if os.path.isfile(f) and os.path.getsize(f) > 0]
    return min(written)[1] if written else None
