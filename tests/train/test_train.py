"""The training engine: it learns, its schedule is right, and resume is exact."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from vfm_course.train import History, TrainConfig, fit, lr_factor, param_groups, read_checkpoint


class ShuffledLoader:
    """A minimal loader with the ``set_epoch`` contract: a seeded reshuffle per epoch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.x, self.y, self.batch_size, self.epoch = x, y, batch_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.epoch))
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


def make_problem(n: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w).argmax(1)
    return x, y


def make_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 3))


def ce_loss(model, batch):
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}


def test_fit_lowers_the_loss_and_evaluates():
    x, y = make_problem()
    model = make_model()
    before = nn.functional.cross_entropy(model(x), y).item()
    hist = fit(
        model,
        ce_loss,
        ShuffledLoader(x, y, 64),
        TrainConfig(steps=80, lr=1e-2, warmup_steps=5, progress=False, log_every=5),
        eval_fn=lambda m: {"acc": (m(x).argmax(1) == y).float().mean().item()},
    )
    after = nn.functional.cross_entropy(model(x), y).item()
    assert after < 0.5 * before
    assert hist.final["acc"] > 0.9
    assert hist.steps[-1] == 80 and len(hist.loss) == 16 and "acc" in hist.logs
    assert not model.training  # fit leaves the model in eval mode


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.1)
    values = [lr_factor(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_param_groups_decay_only_matrices():
    model = make_model()
    decay, no_decay = param_groups(model, 0.05)
    assert all(p.ndim == 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, 0.05)


def test_resume_is_exact(tmp_path):
    """20 steps straight == 8 steps, stop, then resume to 20 (weights and logged losses)."""
    x, y = make_problem()
    common = dict(lr=5e-3, warmup_steps=4, progress=False, log_every=1)
    straight = make_model()
    h1 = fit(straight, ce_loss, ShuffledLoader(x, y, 64), TrainConfig(steps=20, **common))

    ckpt = tmp_path / "run.safetensors"
    resumed = make_model()
    # A first run that stops after 8 steps of a 20-step schedule: simulate it by saving at 8.
    part = TrainConfig(steps=20, checkpoint_path=str(ckpt), checkpoint_every=8, **common)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def loss_then_stop(model, batch):
        calls["n"] += 1
        if calls["n"] > 9:  # step 9 begins after the step-8 checkpoint was written
            raise Stop
        return ce_loss(model, batch)

    with pytest.raises(Stop):
        fit(resumed, loss_then_stop, ShuffledLoader(x, y, 64), part)
    assert read_checkpoint(ckpt)["train_state"]["step"] == 8
    fresh = make_model()  # a new process: fresh weights, then resume from the file
    h2 = fit(fresh, ce_loss, ShuffledLoader(x, y, 64), part)
    for a, b in zip(straight.state_dict().values(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert h2.steps == h1.steps
    assert h2.loss == pytest.approx(h1.loss, rel=1e-5)


def test_resume_refuses_weights_only_file(tmp_path):
    from vfm_course.train import save_checkpoint

    path = tmp_path / "weights.safetensors"
    save_checkpoint(path, make_model(), {"kind": "mlp"})
    x, y = make_problem()
    cfg = TrainConfig(steps=3, checkpoint_path=str(path), progress=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="weights only"):
        fit(make_model(), ce_loss, ShuffledLoader(x, y, 64), cfg)
    assert path.read_bytes() == before


def test_interrupt_saves_and_returns(tmp_path):
    x, y = make_problem()
    ckpt = tmp_path / "run.safetensors"

    def interrupting(model, batch):
        if interrupting.n == 5:
            raise KeyboardInterrupt
        interrupting.n += 1
        return ce_loss(model, batch)

    interrupting.n = 0
    cfg = TrainConfig(steps=50, checkpoint_path=str(ckpt), progress=False, log_every=1)
    hist = fit(make_model(), interrupting, ShuffledLoader(x, y, 64), cfg)
    assert hist.interrupted and ckpt.is_file()
    assert read_checkpoint(ckpt)["train_state"]["step"] == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(steps=0), "steps must be a positive integer"),
        (dict(steps=10, lr=0.0), "learning rate must be > 0"),
        (dict(steps=10, warmup_steps=11), "warmup_steps must be between"),
        (dict(steps=10, amp="fp16"), "amp must be one of"),
        (dict(steps=10, grad_clip=-1.0), "grad_clip must be > 0"),
    ],
)
def test_bad_config_is_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_non_scalar_or_nan_loss_is_explained():
    x, y = make_problem()
    cfg = TrainConfig(steps=2, progress=False)
    with pytest.raises(TypeError, match=r"pair \(loss, logs\).*got Tensor"):
        fit(make_model(), lambda m, b: m(b[0]).sum(), ShuffledLoader(x, y, 64), cfg)
    with pytest.raises(TypeError, match="scalar loss tensor first"):
        fit(make_model(), lambda m, b: (m(b[0]), {}), ShuffledLoader(x, y, 64), cfg)
    with pytest.raises(FloatingPointError, match="lower learning rate"):
        nan = lambda m, b: (m(b[0]).sum() * float("nan"), {})  # noqa: E731
        fit(make_model(), nan, ShuffledLoader(x, y, 64), cfg)


def test_history_round_trips():
    h = History()
    h.record(1, 0.5, 1e-3, {"acc": 0.25})
    h.record_eval(1, {"acc": 0.5})
    assert History.from_dict(h.to_dict()) == h


def test_after_step_runs_once_per_step_without_gradients_and_across_a_resume(tmp_path):
    x, y = make_problem()
    calls = []

    def after_step(model, step):
        calls.append((step, torch.is_grad_enabled()))
        with torch.no_grad():  # a weight the optimizer does not own, moved by the hook alone
            model[0].bias.zero_()

    path = str(tmp_path / "run.safetensors")
    cfg = TrainConfig(steps=6, lr=1e-2, progress=False, checkpoint_path=path)
    model = make_model()
    fit(model, ce_loss, ShuffledLoader(x, y, 64), replace(cfg, steps=4), after_step=after_step)
    assert calls == [(s, False) for s in range(1, 5)]
    fit(model, ce_loss, ShuffledLoader(x, y, 64), cfg, after_step=after_step)  # resumes at 4
    assert [s for s, _ in calls] == [1, 2, 3, 4, 5, 6]
    assert torch.equal(model[0].bias, torch.zeros(32))  # the hook ran after the last step
