"""Several processes, one model: the few pieces :func:`vfm_course.train.fit` needs for
data-parallel training under ``torchrun``.

Data parallelism (DistributedDataParallel, Li et al. 2020, "PyTorch Distributed"): each of the
``world_size`` processes ("ranks") holds a full copy of the model, computes the loss on its own
share of every global batch, and the gradients are averaged across ranks during ``backward``,
so every copy takes the same optimizer step and stays identical. With equal per-rank batches and
a loss that is a mean over samples, that averaged gradient is exactly the gradient of the loss
on the whole global batch: N processes train the same model as one process would.

Launch: ``torchrun --nproc_per_node=N script.py``. torchrun starts N copies of the script and
tells each who it is through environment variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``). :func:`setup` reads them and joins the process group: NCCL for
CUDA tensors (GPU-to-GPU, fast) and gloo for CPU tensors (so a laptop can test the same code).
Nothing here does anything in a plain single-process run: every helper answers as rank 0 of 1.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

# Rank 0 evaluates while the others wait in a broadcast (see train.fit): a long evaluation must
# not trip the collective timeout (NCCL's default is 10 minutes).
TIMEOUT = timedelta(minutes=30)
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when this process was started by ``torchrun`` with more than one process: its
    environment variables are how a process learns its rank without any code in the script."""
    if not all(v in os.environ for v in _TORCHRUN_VARS):
        return False
    return int(os.environ["WORLD_SIZE"]) > 1


def is_distributed() -> bool:
    """True inside an initialized process group of 2 or more ranks. A group of 1 behaves like
    a single process, so the engine takes its plain path there (no DDP overhead)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's index in the group, 0 .. world_size - 1 (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its own machine, which picks its GPU (``cuda:LOCAL_RANK``).

    torchrun sets ``LOCAL_RANK``; without it (a group started by hand) ranks are assumed to be
    spread over the visible GPUs in order."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    count = torch.cuda.device_count()
    return rank() % count if count else 0


def is_main() -> bool:
    """True on rank 0, the one process that prints, draws progress bars and writes files (N
    processes writing one checkpoint at once would corrupt it, and N bars garble a terminal)."""
    return rank() == 0


def setup() -> bool:
    """Join torchrun's process group if this process was launched by torchrun and no group
    exists yet; return :func:`is_distributed`. Safe to call any number of times.

    Backends: gloo for CPU tensors, plus NCCL for CUDA tensors when a GPU is present (each
    collective goes to the backend of its tensors' device, so CPU-only and GPU runs share the
    code). Each rank selects its own GPU first, or all N processes would crowd onto ``cuda:0``.
    The group is torn down at exit (:func:`teardown`).
    """
    if is_distributed() or not launched_by_torchrun():
        return is_distributed()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed, so torchrun cannot be used")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    atexit.register(teardown)
    return is_distributed()


def teardown() -> None:
    """Leave the process group. Without it NCCL warns at exit that resources leaked."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process). Used after rank 0 writes a
    file that the others may read next, so nobody reads a half-written checkpoint."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the CPU when gloo is in the group, else this rank's
    GPU (NCCL moves CUDA tensors only)."""
    return torch.device("cpu") if "gloo" in str(dist.get_backend()) else torch.device("cuda")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over all ranks (a copy; ``values`` is unchanged).

    Why a mean: each rank's loss is a mean over its equal share of the global batch, so the mean
    of the rank means is the loss of the whole global batch, the number one process would log.
    """
    if not is_distributed():
        return values.detach().clone()
    out = values.detach().to(_comm_device(), dtype=torch.float64, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / world_size()).to(values.device, values.dtype)


def mean_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Each named number averaged over ranks in one collective (every rank must pass the same
    names): the extra numbers a loss function logs, such as a batch accuracy."""
    keys = sorted(values)
    flat = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    return dict(zip(keys, all_reduce_mean(flat).tolist(), strict=True))


def all_gather_bytes(data: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's uint8 tensor ``data`` (all the same length), in rank order, on the CPU.
    Used to collect each rank's RNG state into rank 0's checkpoint."""
    if not is_distributed():
        return [data.clone()]
    local = data.to(_comm_device())
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def broadcast_json(obj: Any) -> Any:
    """Rank 0's ``obj`` (anything JSON can carry) on every rank.

    JSON bytes in a uint8 tensor rather than ``broadcast_object_list``, which pickles: the
    course never unpickles, and a metrics dict needs nothing more than JSON."""
    if not is_distributed():
        return obj
    device = _comm_device()
    payload = json.dumps(obj).encode() if is_main() else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buf = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if is_main():
        buf.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buf, src=0)
    return json.loads(bytes(buf.cpu().tolist()).decode())


class Objective(nn.Module):
    """``model`` and ``loss_fn`` as one module whose ``forward(batch)`` is ``loss_fn(model,
    batch)``: the unit DDP wraps.

    Why: DDP averages gradients through hooks armed by a forward *through the DDP wrapper*. A
    loss function that calls ``model.encoder(x)`` or ``model.encode_text(t)`` would bypass a
    wrapped model's ``forward``; wrapping the whole objective instead routes every such call
    through DDP's forward, whatever the loss touches. The parameters are the model's own (names
    get a ``model.`` prefix here; checkpoints are written from the model itself)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def ddp_objective(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any], device: torch.device
) -> nn.Module:
    """``Objective(model, loss_fn)`` inside DistributedDataParallel.

    DDP's constructor copies rank 0's parameters and buffers to every rank, so all ranks start
    from identical weights even if their models were initialised differently."""
    ids = [device.index if device.index is not None else local_rank()]
    return DistributedDataParallel(
        Objective(model, loss_fn), device_ids=ids if device.type == "cuda" else None
    )


def shard_loader(loader: Iterable, rank: int, world_size: int) -> Iterable:
    """The loader that gives this rank its own share of every global batch.

    A loader with ``shard(rank, world_size)`` (like :class:`vfm_course.data.BatchLoader`) is
    sharded by it; a ``DataLoader`` with a ``DistributedSampler`` already is. Anything else is
    refused: every rank would train on the same batches, N times the work for nothing.
    """
    if world_size == 1:
        return loader
    if hasattr(loader, "shard"):
        return loader.shard(rank, world_size)
    if isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    raise TypeError(
        f"under torchrun, fit gives each of the {world_size} processes its own share of the "
        f"data, which needs a loader with a shard(rank, world_size) method such as "
        f"vfm_course.data.BatchLoader, or a DataLoader with a DistributedSampler; got a "
        f"{type(loader).__name__}"
    )
