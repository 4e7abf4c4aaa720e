"""Training throughput of the course ViT vs timm's VisionTransformer, same config, same weights.

    .venv/bin/python bench/bench_vit.py [--quick] [--preset vit_course_tiny] [--amp bf16]

One training step = forward + cross-entropy + backward + AdamW step, on a fixed random batch
(the data pipeline is not measured). ``--amp auto`` (the default): fp32 on CPU, bf16 autocast
on CUDA (see TOOLING-NOTES: bf16 autocast slows small ViTs on CPU); ``--amp bf16`` or ``off``
forces it either way. The two models are timed in alternating repetitions
(A B, then B A, ...) so drift in machine load hits both alike; the medians are compared.
The goal is a ratio course/timm >= 1.0. Prints numbers only; timing never asserts anything.
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F
from torch import nn

from vfm_course.models import PRESETS, VisionTransformer, to_timm, vit_config


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
    """Return a closure doing one full training step of ``model`` on (x, y)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def images_per_second(step, steps: int, batch: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit_course_tiny", choices=list(PRESETS))
    parser.add_argument("--quick", action="store_true", help="a short run (< 1 min on CPU)")
    parser.add_argument("--batch", type=int, default=None, help="batch size")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per model")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--amp", default="auto", choices=("auto", "bf16", "off"), help="auto: bf16 on CUDA only"
    )
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    cfg = vit_config(args.preset)
    big = cfg.img_size > 64
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else (8 if big else 64 if args.quick else 128))
    steps = args.steps or (5 if args.quick else 20)
    reps = args.reps or (6 if args.quick else 10)

    torch.manual_seed(0)
    course = VisionTransformer(cfg).to(device).train()
    reference = to_timm(course)  # same weights, loaded strictly
    x = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    y = torch.randint(0, max(cfg.num_classes, 1), (batch,), device=device)
    steps_by_name = {
        "course": make_step(course, x, y, amp),
        "timm": make_step(reference, x, y, amp),
    }

    print(
        f"preset {args.preset}: {course.num_params():,} params, batch {batch}, "
        f"{steps} steps x {reps} reps, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if cuda else "")
        + (" bf16 autocast" if amp else " fp32")
        + f", {torch.get_num_threads()} threads, torch {torch.__version__}, timm {timm.__version__}"
    )
    for step in steps_by_name.values():  # warm-up: allocator, kernels, AdamW state
        images_per_second(step, 2, batch, device)

    rates: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for rep in range(reps):
        order = ["course", "timm"] if rep % 2 == 0 else ["timm", "course"]
        for name in order:
            rates[name].append(images_per_second(steps_by_name[name], steps, batch, device))

    med = {name: statistics.median(r) for name, r in rates.items()}
    pair_ratios = [c / t for c, t in zip(rates["course"], rates["timm"], strict=True)]
    for name in ("course", "timm"):
        spread = f"min {min(rates[name]):,.0f}, max {max(rates[name]):,.0f}"
        print(f"{name:>7}: {med[name]:10,.1f} images/s (median; {spread})")
    print(
        f"  ratio course/timm: {med['course'] / med['timm']:.3f} "
        f"(median of per-rep ratios {statistics.median(pair_ratios):.3f}; goal >= 1.0)"
    )


if __name__ == "__main__":
    main()
