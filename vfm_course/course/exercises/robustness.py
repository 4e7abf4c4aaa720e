"""Lesson 05's robustness exercises: the checkers for FGSM and PGD (the registry entries are in
:mod:`.finetune`, beside the lesson's other exercises)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...objectives.adversarial import fgsm, pgd
from .checking import call_learner, close, diagnose, expect_tensor, fail, passed


def _fgsm_models(g: torch.Generator) -> list[tuple[str, torch.nn.Module]]:
    """Small seeded models for the FGSM check; one with BatchNorm left in train mode."""
    from torch import nn

    def seeded(model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        return model

    mlp = seeded(nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 4)))
    cnn = seeded(
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, 4),
        )
    )
    with torch.no_grad():  # running statistics unlike any batch's, so train mode shows
        cnn[1].running_mean.copy_(torch.randn(6, generator=g))
        cnn[1].running_var.copy_(0.5 + torch.rand(6, generator=g))
    return [("a small MLP in eval mode", mlp.eval()), ("a CNN with BatchNorm in train mode", cnn)]


def _call_attack(ex: str, fn: Callable[..., torch.Tensor], model: torch.nn.Module, *args):
    """Call the learner's attack; fail if it leaves the model changed or in another mode."""
    was_training = model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = call_learner(ex, fn, model, *args)
    if model.training != was_training:
        fail(
            ex,
            f"the model was in {'train' if was_training else 'eval'} mode before your "
            f"function and in {'train' if model.training else 'eval'} mode after",
            "put it back as you found it: `with eval_mode(model): ...` does that for you",
        )
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    model.load_state_dict(state)
    if changed:
        fail(
            ex,
            f"the attack changed the model ({', '.join(changed)})",
            "run the model in eval mode during the attack (`with eval_mode(model):`), so "
            "BatchNorm neither uses the batch's statistics nor updates its running ones",
        )
    return out


def check_fgsm(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(model, images, labels, epsilon)`` -> ``clamp(x + eps * sign(grad_x CE), 0, 1)``,
    computed with the model in eval mode and the model's mode restored afterwards."""
    import torch.nn.functional as F

    from ...core.inference import eval_mode

    ex = "check_fgsm"
    g = torch.Generator().manual_seed(503)
    models = _fgsm_models(g)
    cases = [(0, 3, 0.1), (1, 4, 0.05), (0, 2, 0.3), (1, 3, 0.02)]
    for m, B, eps in cases:
        what, model = models[m]
        x = torch.rand(B, 3, 4, 4, generator=g)
        y = torch.randint(4, (B,), generator=g)
        expected = fgsm(model, x, y, eps)
        out = _call_attack(ex, fn, model, x, y, eps)
        out = expect_tensor(ex, out, tuple(x.shape), "return the perturbed images, (B, C, H, W)")
        xg = x.clone().requires_grad_(True)
        with eval_mode(model), torch.enable_grad():
            grad = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)[0]
        step = eps * grad.sign()
        wrong = {
            "the images moved *down* the loss: an attack adds epsilon * sign(gradient) to "
            "increase the loss": (x - step).clamp(0, 1),
            "the result leaves the valid pixel range: clamp it to [0, 1]": x + step,
            "use the gradient's sign, not the gradient itself: every pixel moves by exactly "
            "epsilon (the steepest step under an L-infinity budget)": (x + eps * grad).clamp(0, 1),
            "that is the perturbation alone: return the perturbed images x + epsilon * "
            "sign(gradient), clamped": step,
        }
        diagnose(ex, out, expected, wrong, f"on {what}, epsilon={eps}")
    return passed(f"FGSM matches the reference on {len(cases)} models and budgets")


def _pgd_variant(model, x, y, eps, steps, g, bug: str) -> torch.Tensor:
    """PGD with one known mistake, from the same random start as the reference."""
    import torch.nn.functional as F

    from ...core.inference import eval_mode

    step = eps if bug == "full_step" else 2.5 * eps / steps
    noise = torch.rand(x.shape, generator=g)
    x_adv = x.clone() if bug == "no_start" else (x + eps * (2 * noise - 1)).clamp(0, 1)
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            xg = x_adv.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y), xg)
            x_adv = x_adv + (-step if bug == "descent" else step) * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
            x_adv = x_adv.clamp(0, 1)
    return x_adv


def check_pgd(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(model, images, labels, epsilon, steps, generator)`` against the package's
    :func:`~vfm_course.objectives.adversarial.pgd` (step ``2.5 epsilon / steps``, random start
    ``x + epsilon (2 u - 1)`` with ``u = torch.rand(images.shape, generator=generator)``, each
    step projected onto the epsilon-ball around the clean images and onto [0, 1])."""
    ex = "check_pgd"
    g = torch.Generator().manual_seed(504)
    models = _fgsm_models(g)
    cases = [(0, 3, 0.1, 3), (1, 4, 0.05, 5), (0, 2, 0.3, 4), (1, 3, 0.2, 2)]
    for m, B, eps, steps in cases:
        what, model = models[m]
        x = torch.rand(B, 3, 4, 4, generator=g)
        y = torch.randint(4, (B,), generator=g)
        seed = int(torch.randint(2**31, (1,), generator=g))
        expected = pgd(model, x, y, eps, steps=steps, generator=torch.Generator().manual_seed(seed))
        out = _call_attack(ex, fn, model, x, y, eps, steps, torch.Generator().manual_seed(seed))
        out = expect_tensor(ex, out, tuple(x.shape), "return the perturbed images, (B, C, H, W)")
        case = f"on {what}, epsilon={eps}, {steps} steps"
        if close(out, expected):
            continue
        again = _call_attack(ex, fn, model, x, y, eps, steps, torch.Generator().manual_seed(seed))
        if not close(again, out):
            fail(
                ex,
                f"two calls with the same seeded generator gave different images {case}",
                "draw the random start from the generator you are given: "
                "torch.rand(images.shape, generator=generator)",
            )
        if (out - x).abs().max() > eps + 1e-6:
            fail(
                ex,
                f"some pixels moved by {(out - x).abs().max().item():.3g} > epsilon = {eps} {case}",
                "after each step, project back into the ball: clip to [images - epsilon, "
                "images + epsilon] around the *clean* images (then to [0, 1])",
            )
        if out.min() < 0 or out.max() > 1:
            fail(ex, f"the result leaves the valid pixel range {case}", "clamp it to [0, 1]")
        wrong = {
            f"each step moved by epsilon: PGD takes {steps} smaller steps of size 2.5 * "
            "epsilon / steps, so the walk can turn and still cross the ball": "full_step",
            "the walk starts at the clean images: start at a random point of the ball, "
            "x + epsilon * (2 * torch.rand(images.shape, generator=generator) - 1), clamped "
            "to [0, 1]": "no_start",
            "the images moved *down* the loss: each step adds step_size * sign(gradient)": (
                "descent"
            ),
        }
        variants = {
            hint: _pgd_variant(model, x, y, eps, steps, torch.Generator().manual_seed(seed), bug)
            for hint, bug in wrong.items()
        }
        diagnose(ex, out, expected, variants, case)
    return passed(f"PGD matches the package's pgd on {len(cases)} models, budgets and step counts")


def pgd_reference(model, images, labels, epsilon, steps, generator):
    """The package's :func:`~vfm_course.objectives.adversarial.pgd` with its default step size
    and random start, in the exercise's signature."""
    return pgd(model, images, labels, epsilon, steps=steps, generator=generator)
