"""The one training engine every notebook uses: :func:`fit`.

The notebook owns the objective: a ``loss_fn(model, batch)`` returning a scalar loss (or a
``(loss, {"name": value})`` pair of extra numbers to log). The engine owns everything around
it, so each lesson's code shows only what is new in that lesson:

- device choice (cuda > mps > cpu) and bf16 autocast where it helps (CUDA; on CPU it slowed
  small ViTs and is 10-20x slower on CPUs without bf16 instructions, so fp32 there),
- AdamW with weight decay only on matrices (not on biases, norms, position embeddings, CLS),
  linear warmup then cosine decay (Loshchilov & Hutter 2017), gradient-norm clipping,
- a ``tqdm.auto`` progress bar, periodic evaluation, a :class:`History` of everything,
- seeding, and safetensors checkpoints that an interrupted run resumes from exactly,
- several processes under ``torchrun`` (DistributedDataParallel), with nothing to change in
  the notebook: see "Under torchrun" in :func:`fit` and :mod:`vfm_course.train.distributed`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.profile import pick_device
from ..core.validate import check_choice, check_positive_int
from . import distributed as dist
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .history import History
from .optim import param_groups

# What every loss_fn(model, batch) returns: the scalar loss to minimise and a dict of floats to
# record beside it (``{}`` for none). One shape for every objective, so fit never guesses.
LossOutput = tuple[torch.Tensor, Mapping[str, float]]
PROGRESS_INTERVAL_S = 1.0  # the progress bar's shortest time between redraws


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one :func:`fit` call. ``steps`` counts optimizer steps."""

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0
    amp: str = "auto"  # "auto": bf16 on CUDA, fp32 elsewhere; "bf16" or "off" to force
    seed: int = 0
    device: str | None = None  # None: cuda > mps > cpu (or $VFM_DEVICE)
    log_every: int = 10
    eval_every: int | None = None  # None: evaluate once, at the end
    checkpoint_path: str | None = None
    checkpoint_every: int | None = None  # None: only at the end (and on interrupt)
    resume: bool = True
    progress: bool = True
    desc: str = "train"

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        if self.lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps must be between 0 and steps ({self.steps}), got {self.warmup_steps}"
            )
        check_choice(self.amp, "amp", ("auto", "bf16", "off"))
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - learners' code may use the legacy global RNG
    torch.manual_seed(seed)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor inside a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def use_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast on CUDA by default; fp32 on CPU (see the module docstring for why)."""
    if cfg.amp == "off":
        return False
    if cfg.amp == "bf16":
        return True
    return device.type == "cuda"


def _batches(loader: Iterable, start_step: int) -> Iterable:
    """Endless batches from ``loader``, epoch after epoch, starting at ``start_step``.

    Loaders with ``set_epoch`` (like :class:`vfm_course.data.BatchLoader`) reshuffle per epoch
    deterministically, so a resumed run skips to exactly the batch it stopped at.
    """
    per_epoch = len(loader) if hasattr(loader, "__len__") else None
    if per_epoch == 0:
        raise ValueError("the training loader yields no batches (is the dataset empty?)")
    epoch, skip = (start_step // per_epoch, start_step % per_epoch) if per_epoch else (0, 0)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        n = 0
        for i, batch in enumerate(loader):
            n += 1
            if i >= skip:
                yield batch
        if n == 0:
            raise ValueError("the training loader yields no batches (is the dataset empty?)")
        epoch, skip = epoch + 1, 0


def _split_loss(out: LossOutput) -> tuple[torch.Tensor, Mapping[str, float]]:
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)):
        raise TypeError(
            "loss_fn must return a pair (loss, logs): the scalar loss tensor and a dict of "
            "floats to record, e.g. `return loss, {}`; got "
            f"{type(out).__name__}{' of length ' + str(len(out)) if isinstance(out, tuple) else ''}"
        )
    loss, logs = out
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise TypeError("loss_fn must return a scalar loss tensor first, as in `return loss, {}`")
    return loss, logs


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], LossOutput],
    train_loader: Iterable,
    config: TrainConfig,
    *,
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    after_step: Callable[[nn.Module, int], None] | None = None,
) -> History:
    """Train ``model`` for ``config.steps`` optimizer steps on ``loss_fn`` and return a History.

    ``loss_fn(model, batch)`` returns ``(loss, logs)``: the scalar loss and a dict of floats
    recorded beside it each step (``{}`` for none); every objective in the package has this form.
    ``eval_fn(model)`` returns a dict of metrics; it runs under ``torch.no_grad`` in eval mode
    every ``eval_every`` steps and at the end. Pass ``optimizer`` to use your own (for example
    with per-layer learning rates); its groups' ``lr`` are taken as the base rates. With
    ``checkpoint_path`` set, an existing checkpoint there is resumed from (``resume=True``) and
    a Ctrl-C / kernel interrupt saves one before returning. ``after_step(model, step)`` runs
    without gradients after optimizer step ``step`` (1 to ``steps``), on every rank: for weights
    that follow the trained ones untrained, like DINO's momentum teacher (an EMA of the student).

    Under torchrun (or in any initialized process group of N > 1 ranks) the same call trains
    data-parallel: each rank takes its ``1/N`` share of every global batch (the loader is
    sharded with :func:`vfm_course.train.distributed.shard_loader`, so ``batch_size`` means the
    global batch) and ``loss_fn`` runs inside DistributedDataParallel, which averages the
    gradients. All ranks start from rank 0's weights. The logged loss and extras are the mean
    over ranks. ``eval_fn`` runs on rank 0 only, on the whole model, and its metrics are sent to
    every rank, so every rank returns the same History and the numbers are exactly what one
    process would compute (eval_fn must therefore not use collectives itself). Rank 0 alone
    draws the progress bar and writes checkpoints (with every rank's RNG state); every rank
    resumes from them. Each rank's random stream is seeded with ``seed + rank`` (as DeiT does)
    so augmentations and masks differ across ranks.
    """
    cfg = config
    distributed = dist.setup()  # joins torchrun's process group when launched by it
    rank, world = dist.rank(), dist.world_size()
    device = pick_device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank())
    seed_everything(cfg.seed + rank)
    model.to(device)
    train_loader = dist.shard_loader(train_loader, rank, world)
    if optimizer is None:
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
    for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
        g["initial_lr"] = lr
    history, start = History(), 0
    ckpt = Path(cfg.checkpoint_path) if cfg.checkpoint_path else None
    if ckpt is not None and cfg.resume and ckpt.is_file():
        start, history = _resume(ckpt, model, optimizer, device)
    amp = use_amp(cfg, device)
    # One module around model + loss_fn, so DDP sees whatever submodules the loss calls.
    objective = dist.ddp_objective(model, loss_fn, device) if distributed else None

    def save(step: int, together: bool = True) -> None:
        """Rank 0 writes; with ``together`` (all ranks here at once) it also stores every
        rank's RNG state, and the others wait until the file is complete."""
        if ckpt is None:
            return
        state = {"step": step, "history": history.to_dict()}
        state["torch_rng_state"] = torch.get_rng_state()
        if distributed and together:
            states = dist.all_gather_bytes(torch.get_rng_state())
            state["rank_rng_states"] = [bytes(s.tolist()).hex() for s in states]
        if dist.is_main():
            save_checkpoint(ckpt, model, cfg, optimizer=optimizer, train_state=state)
        if distributed and together:
            dist.barrier()

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        payload: dict[str, Any] = {}
        if dist.is_main():
            model.eval()
            try:
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                    payload["metrics"] = {k: float(v) for k, v in eval_fn(model).items()}
            except Exception as err:
                if not distributed:
                    raise
                payload["error"] = f"{type(err).__name__}: {err}"  # tell the waiting ranks
            model.train()
        payload = dist.broadcast_json(payload)
        if "error" in payload:
            if dist.is_main():
                raise RuntimeError(f"eval_fn failed: {payload['error']}")
            raise RuntimeError(f"eval_fn failed on rank 0 ({payload['error']})")
        history.record_eval(step, payload["metrics"])

    show = cfg.progress and dist.is_main()
    # One redraw a second at most: in a notebook every redraw is a widget message on the kernel's
    # output channel, and a loaded machine running many short fits (lesson 05 runs ten in one
    # cell) fell behind by more than nbval's 60 s output wait at tqdm's default 10 per second.
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=cfg.desc,
        disable=not show,
        leave=True,
        mininterval=PROGRESS_INTERVAL_S,
    )
    t0, step = time.perf_counter(), start
    model.train()
    try:
        batches = _batches(train_loader, start)
        while step < cfg.steps:
            batch = to_device(next(batches), device)
            factor = lr_factor(step, cfg)
            for g, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                g["lr"] = lr * factor
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out = objective(batch) if objective is not None else loss_fn(model, batch)
                loss, extra = _split_loss(out)
            # Under DDP every rank checks the mean over ranks, so all stop together.
            mean_loss = dist.all_reduce_mean(loss) if distributed else loss
            if not torch.isfinite(mean_loss):
                raise FloatingPointError(
                    f"the loss became {mean_loss.item()} at step {step}; try a lower learning rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            if after_step is not None:
                with torch.no_grad():
                    after_step(model, step)
            if step % cfg.log_every == 0 or step == cfg.steps:
                value = mean_loss.item()
                if distributed:
                    extra = dist.mean_over_ranks(extra)
                history.record(step, value, optimizer.param_groups[0]["lr"], extra)
                bar.set_postfix(loss=f"{value:.3f}", refresh=False)
            bar.update(1)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                evaluate(step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                save(step)
        evaluate(step)
    except KeyboardInterrupt:
        history.interrupted = True
        if dist.is_main():
            print(f"Interrupted at step {step}/{cfg.steps}.", end=" ")
            if ckpt is not None:
                print(f"Saved {ckpt}; run the same cell again to resume.")
            else:
                print("Set checkpoint_path to be able to resume.")
    except RuntimeError as err:
        if distributed and "finished reduction" in str(err):
            raise RuntimeError(
                "DDP found parameters that got no gradient in the last step: every trainable "
                "parameter must take part in the loss (freeze unused ones with "
                "requires_grad_(False))"
            ) from err
        raise
    finally:
        bar.close()
        history.seconds += time.perf_counter() - t0
    # After Ctrl-C the ranks may have stopped at different points: no collectives then.
    save(step, together=not history.interrupted)
    model.eval()
    return history


def _resume(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, History]:
    ckpt = read_checkpoint(path)
    if "train_state" not in ckpt or "optimizer" not in ckpt:
        raise ValueError(
            f"{path} holds weights only, not a training state to resume; pass resume=False "
            f"or another checkpoint_path (the file is left untouched)"
        )
    load_weights(model, ckpt["model"], str(path))
    model.to(device)
    optimizer.load_state_dict(ckpt["optimizer"])
    state = ckpt["train_state"]
    per_rank = state.get("rank_rng_states", [])
    if len(per_rank) == dist.world_size() > 1:  # each rank picks up its own random stream
        rng = bytearray.fromhex(per_rank[dist.rank()])
        torch.set_rng_state(torch.frombuffer(rng, dtype=torch.uint8).clone())
    elif "torch_rng_state" in state and dist.is_main():
        # Saved by one process (or after Ctrl-C, or by another world size): rank 0 continues
        # that stream; the other ranks keep their fresh seed + rank streams.
        torch.set_rng_state(state["torch_rng_state"])
    return int(state["step"]), History.from_dict(state["history"])
