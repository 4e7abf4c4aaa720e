"""Data-parallel training: a real 2-process torchrun run (CPU, gloo) of the unchanged engine
matches one process with the same global batch and seed; the loader's sharding is a partition
of the same permutation; misuse is explained.

This file is also the worker script: ``python -m torch.distributed.run --nproc_per_node=2
tests/test_distributed.py --out DIR`` runs :func:`worker` on each rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from vfm_course.data import BatchLoader
from vfm_course.train import TrainConfig, fit
from vfm_course.train import distributed as dist

GLOBAL_BATCH, STEPS, STOP_AT = 32, 20, 10  # 256 samples: 8 batches per epoch, 2.5 epochs


class TwoPart(nn.Module):
    """A tiny MLP in two named parts; the loss below calls the parts, never ``forward``,
    like lessons whose loss calls ``model.encoder``: DDP must still average the gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 32), nn.GELU())
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)  # a learnable 3-class problem
    return x, y


def make_model(seed: int) -> TwoPart:
    torch.manual_seed(seed)
    return TwoPart()


def loss_fn(model: TwoPart, batch):
    x, y = batch
    logits = model.head(model.body(x))
    acc = (logits.argmax(1) == y).float().mean().item()
    return nn.functional.cross_entropy(logits, y), {"acc": acc}


def train(model: nn.Module, loss, loader, checkpoint: Path | None = None):
    """The run both sides make: warmup + cosine, logging and evaluating along the way."""
    x, y = make_data()
    cfg = TrainConfig(
        steps=STEPS,
        lr=1e-2,
        warmup_steps=2,
        log_every=1,
        eval_every=5,
        progress=False,
        device="cpu",
        checkpoint_path=str(checkpoint) if checkpoint else None,
        checkpoint_every=5 if checkpoint else None,
    )

    def eval_fn(m):
        logits = m(x)
        return {"acc": (logits.argmax(1) == y).float().mean().item()}

    return fit(model, loss, loader, cfg, eval_fn=eval_fn)


def loader() -> BatchLoader:
    x, y = make_data()
    return BatchLoader(x, y, GLOBAL_BATCH, shuffle=True, seed=3)


# --- the worker (one per rank, under torchrun) ----------------------------------------------


class Stop(Exception):
    pass


def worker(out: Path) -> None:
    """Three runs in one torchrun job: straight through; stopped after the step-10 checkpoint;
    resumed from it by fresh models. Each rank saves its weights and history."""
    assert dist.setup() and dist.world_size() == 2
    r = dist.rank()
    # Different initial weights per rank: DDP must broadcast rank 0's (seed 1) to everyone.
    model = make_model(seed=1 + 100 * r)
    hist = train(model, loss_fn, loader())
    save_file(model.state_dict(), str(out / f"straight_rank{r}.safetensors"))
    (out / f"straight_rank{r}.json").write_text(json.dumps(hist.to_dict()))

    ckpt = out / "run.safetensors"
    calls = {"n": 0}

    def stopping(model, batch):
        calls["n"] += 1
        if calls["n"] > STOP_AT:  # on both ranks at the same step, after the step-10 save
            raise Stop
        return loss_fn(model, batch)

    try:
        train(make_model(seed=1), stopping, loader(), ckpt)
    except Stop:
        pass
    resumed = make_model(seed=7 + r)  # a fresh process's model, then the checkpoint
    hist = train(resumed, loss_fn, loader(), ckpt)
    save_file(resumed.state_dict(), str(out / f"resumed_rank{r}.safetensors"))
    (out / f"resumed_rank{r}.json").write_text(json.dumps(hist.to_dict()))


def _run_torchrun(out: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", VFM_DEVICE="cpu", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free local port, no rendezvous server
        "--nproc_per_node=2",
        __file__,
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    _run_torchrun(out)
    return out


@pytest.fixture(scope="module")
def reference():
    """One process, same global batch and seed."""
    model = make_model(seed=1)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train(model, loss_fn, loader())
    return init, model.state_dict(), hist


# Tolerance: the two runs do the same arithmetic in a different order (two means over 16
# samples, summed across processes and halved, vs one mean over 32), so they differ by float32
# rounding, about 1e-7 per operation, slightly amplified over 20 Adam steps. Measured here: at
# most 6e-8 in the weights and 2.4e-7 in the logged losses. 1e-5 leaves room for other CPUs'
# kernels while staying far below what a real bug does (test_comparison_is_not_trivial: training
# without gradient averaging lands 0.13 away; the weights move 0.11 from their start).
ATOL = 1e-5


def test_two_processes_match_one(ddp_out, reference):
    init, want, ref_hist = reference
    for r in (0, 1):
        got = load_file(str(ddp_out / f"straight_rank{r}.safetensors"))
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=ATOL, rtol=0)
        hist = json.loads((ddp_out / f"straight_rank{r}.json").read_text())
        assert hist["steps"] == ref_hist.steps
        assert hist["loss"] == pytest.approx(ref_hist.loss, abs=ATOL)
        assert hist["logs"]["acc"] == pytest.approx(ref_hist.logs["acc"], abs=ATOL)
        assert hist["eval_steps"] == ref_hist.eval_steps == [5, 10, 15, 20]
        assert hist["evals"]["acc"] == pytest.approx(ref_hist.evals["acc"], abs=ATOL)
    # The ranks hold bit-identical weights (same averaged gradients, same updates).
    rank0 = load_file(str(ddp_out / "straight_rank0.safetensors"))
    rank1 = load_file(str(ddp_out / "straight_rank1.safetensors"))
    for k in rank0:
        torch.testing.assert_close(rank0[k], rank1[k], atol=0, rtol=0)


def test_resume_under_torchrun_is_exact(ddp_out, reference):
    _, want, ref_hist = reference
    for r in (0, 1):
        got = load_file(str(ddp_out / f"resumed_rank{r}.safetensors"))
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=ATOL, rtol=0)
        hist = json.loads((ddp_out / f"resumed_rank{r}.json").read_text())
        assert hist["steps"] == ref_hist.steps  # the first 10 come from the checkpoint
        assert hist["loss"] == pytest.approx(ref_hist.loss, abs=ATOL)


def test_comparison_is_not_trivial(reference):
    """The match above means something: training moved the weights far from their start, and
    one rank training on its half of each batch without gradient averaging (what DDP saves us
    from) ends far from the reference, by much more than ATOL."""
    init, want, ref_hist = reference
    assert ref_hist.loss[-1] < 0.8 * ref_hist.loss[0] and ref_hist.evals["acc"][-1] > 0.8
    moved = max((want[k] - init[k]).abs().max().item() for k in want)
    assert moved > 0.05
    alone = make_model(seed=1)
    train(alone, loss_fn, loader().shard(0, 2))  # one process: rank 0's half, no averaging
    apart = max((alone.state_dict()[k] - want[k]).abs().max().item() for k in want)
    assert apart > 1000 * ATOL


# --- sharding --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch", "world"), [(256, 32, 2), (100, 12, 4), (10, 6, 3)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_partition_each_global_batch(n, batch, world, drop_last):
    x, y = torch.arange(n).float()[:, None], torch.arange(n)
    full = BatchLoader(x, y, batch, shuffle=True, seed=5, drop_last=drop_last)
    full.set_epoch(2)
    shards = [full.shard(r, world) for r in range(world)]
    for s in shards:
        s.set_epoch(2)
        assert len(s) == len(full) and s.local_batch_size == batch // world
    unsharded = [b[1] for b in full]
    per_rank = [[b[1] for b in s] for s in shards]
    seen = []
    for i, want in enumerate(unsharded):
        parts = [rank_batches[i] for rank_batches in per_rank]
        assert len({len(p) for p in parts}) == 1  # equal shares, as DDP's lock-step needs
        interleaved = torch.stack(parts, dim=1).flatten()  # rank 0, 1, ..., 0, 1, ...
        if len(want) == batch:  # a full global batch: exactly the unsharded one
            assert torch.equal(interleaved, want)
        else:  # the padded last batch: the unsharded tail, then repeats from the start
            assert torch.equal(interleaved[: len(want)], want)
            repeats = set(interleaved[len(want) :].tolist())
            assert repeats <= set(full.permutation()[:world].tolist())
        seen.append(interleaved[: len(want)])
    seen = torch.cat(seen)
    assert len(set(seen.tolist())) == len(seen)  # disjoint
    covered = (n // batch) * batch if drop_last else n
    assert torch.equal(seen, full.permutation()[:covered])  # covering, in the same order


def test_shard_is_a_new_loader_and_unsharded_behaviour_is_unchanged():
    x, y = torch.rand(20, 3, 4, 4), torch.arange(20)
    full = BatchLoader(x, y, 8, seed=1)
    shard = full.shard(1, 2)
    assert shard is not full and (full.rank, full.world_size) == (0, 1)
    assert torch.equal(full.indices(), full.permutation())
    assert [len(b[1]) for b in full] == [8, 8, 4]
    assert [len(b[1]) for b in shard] == [4, 4, 2]
    assert shard.shard(1, 2) is shard  # sharding again the same way is a no-op


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3), "not divisible by the 3 processes; pick a multiple of 3"),
        ((2, 2), "rank must be an integer from 0 to 1"),
        ((0, 0), "world_size must be a positive integer"),
    ],
)
def test_shard_errors_are_explained(args, message):
    full = BatchLoader(torch.rand(20, 3, 4, 4), torch.arange(20), 8)
    with pytest.raises(ValueError, match=message):
        full.shard(*args)


def test_resharding_a_share_is_refused():
    share = BatchLoader(torch.rand(20, 3, 4, 4), torch.arange(20), 8).shard(0, 2)
    with pytest.raises(ValueError, match="already rank 0's share of 2"):
        share.shard(1, 2)


def test_shard_loader_accepts_shardable_and_presharded_loaders_only():
    data = TensorDataset(torch.rand(16, 2), torch.arange(16))
    bl = BatchLoader(data.tensors[0], data.tensors[1], 8)
    assert dist.shard_loader(bl, 0, 1) is bl
    assert dist.shard_loader(bl, 1, 2).rank == 1
    sampled = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 2, 0))
    assert dist.shard_loader(sampled, 0, 2) is sampled
    with pytest.raises(TypeError, match="shard\\(rank, world_size\\).*got a DataLoader"):
        dist.shard_loader(DataLoader(data, batch_size=4), 0, 2)


# --- the helpers in one process ----------------------------------------------------------------


def test_helpers_answer_as_rank_0_of_1_in_a_single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not dist.launched_by_torchrun() and not dist.setup()
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    dist.barrier()
    v = torch.tensor([1.5, 2.0])
    assert torch.equal(dist.all_reduce_mean(v), v)
    assert dist.broadcast_json({"acc": 0.5}) == {"acc": 0.5}
    assert dist.mean_over_ranks({"b": torch.tensor(2.0), "a": 1}) == {"a": 1.0, "b": 2.0}
    assert len(dist.all_gather_bytes(torch.get_rng_state())) == 1
    env = dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="localhost", MASTER_PORT="29500")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert not dist.launched_by_torchrun()  # a world of one is a single process
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist.launched_by_torchrun()


def test_objective_is_the_loss_of_the_model():
    model, x, y = make_model(1), *make_data()
    objective = dist.Objective(model, loss_fn)
    assert dict(objective.named_parameters()).keys() == {
        f"model.{k}" for k, _ in model.named_parameters()
    }
    torch.testing.assert_close(objective((x, y))[0], loss_fn(model, (x, y))[0])


if __name__ == "__main__":  # a torchrun worker
    out_dir = Path(sys.argv[sys.argv.index("--out") + 1])
    worker(out_dir)
