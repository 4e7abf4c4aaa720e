"""Achieved FLOP/s of the training loop, against this machine's own measured matmul peak.

    .venv/bin/python bench/bench_flops.py [--preset vit_course_tiny] [--batch 64] [--steps 10]

FLOPs of one training step (forward + backward) are counted by
``torch.utils.flop_counter.FlopCounterMode``: matrix multiplies, convolutions and attention,
the work that dominates a transformer; the optimizer's and the norms' element-wise work is not
counted (the usual convention of "model FLOPs utilisation", PaLM, Chowdhery et al. 2022).
Two loops are timed over the same number of steps:

- "bare step": forward, cross-entropy, backward and AdamW on one fixed batch;
- "fit": the course engine (:func:`vfm_course.train.fit`) over a :class:`BatchLoader` of random
  images, so the batch indexing, schedule, clipping and logging every lesson pays are included.

The peak is measured, not taken from a datasheet: the best of several timings of one large
square matmul in the training dtype (fp32 on CPU; bf16 on CUDA, where training runs under bf16
autocast). The ratio achieved / peak says how much of the machine the loop uses. A tiny ViT
reaches a small fraction: its matrices are narrow, and per-op overhead dominates.
Prints numbers only; timing never asserts anything.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vfm_course.data import BatchLoader
from vfm_course.models import PRESETS, VisionTransformer, vit_config
from vfm_course.train import TrainConfig, fit

aten = torch.ops.aten


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one that
# F.scaled_dot_product_attention dispatches to, so it would count CPU attention as free.
# Same convention as its CUDA formulas: QK^T and PV forward (2 matmuls of 2*B*h*L*S*d FLOPs),
# and the 4 matmuls of their gradients backward (nothing counted for recomputation).
def _cpu_attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    B, h, L, d = q_shape
    S, dv = k_shape[-2], v_shape[-1]
    return 2 * B * h * L * S * (d + dv)


def _cpu_attention_backward_flops(
    grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs
) -> int:
    return 2 * _cpu_attention_flops(q_shape, k_shape, v_shape)


CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
}


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of the fastest of ``reps`` (n x n) @ (n x n) products: 2 n^3 FLOPs each."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm-up: thread pool, cuBLAS heuristics
        a @ b
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def loss_fn(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def step_flops(model: VisionTransformer, x: torch.Tensor, y: torch.Tensor, amp: bool) -> int:
    """FLOPs of one forward + backward (counted once; no weights change)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, (x, y))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def time_bare_steps(model, x, y, amp: bool, steps: int) -> float:
    """Seconds per step of forward + loss + backward + AdamW on a fixed batch."""
    model.train()  # fit leaves the model in eval mode
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model, (x, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(x.device)
    return (time.perf_counter() - start) / steps


def time_fit_steps(model, loader, amp: bool, steps: int, device: torch.device) -> float:
    """Seconds per step of the course engine, as History.seconds measures its loop."""
    cfg = TrainConfig(
        steps=steps,
        lr=1e-4,
        amp="bf16" if amp else "off",
        device=device.type,
        log_every=steps,
        progress=False,
    )
    history = fit(model, loss_fn, loader, cfg)
    _sync(device)
    return history.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit_course_tiny", choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=None, help="batch size")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed repetition")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (median)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument(
        "--amp", default="auto", choices=("auto", "bf16", "off"), help="auto: bf16 on CUDA only"
    )
    parser.add_argument("--matmul", type=int, default=None, help="side of the peak matmul")
    args = parser.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if amp else torch.float32
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 64)
    steps = args.steps or (50 if cuda else 10)
    n = args.matmul or (8192 if cuda else 2048)

    cfg = vit_config(args.preset)
    torch.manual_seed(0)
    model = VisionTransformer(cfg).to(device).train()
    x = torch.rand(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
    y = torch.randint(0, max(cfg.num_classes, 1), (batch,), device=device)
    loader = BatchLoader(
        torch.rand(batch * 4, cfg.in_chans, cfg.img_size, cfg.img_size, device=device),
        torch.randint(0, max(cfg.num_classes, 1), (batch * 4,), device=device),
        batch,
        drop_last=True,
    )
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(
        f"preset {args.preset} ({model.num_params():,} params), batch {batch}, {steps} steps x "
        f"{args.reps} reps, {device} ({where}), "
        f"{'bf16 autocast' if amp else 'fp32'}, torch {torch.__version__}"
    )

    flops = step_flops(model, x, y, amp)
    peak = matmul_peak(device, dtype, n, reps=5 if not cuda else 20)
    time_bare_steps(model, x, y, amp, 2)  # warm-up: allocator, kernels
    time_fit_steps(model, loader, amp, 2, device)
    seconds: dict[str, list[float]] = {"bare step": [], "fit (engine)": []}
    for _ in range(args.reps):  # interleaved, so drift in machine load hits both alike
        seconds["bare step"].append(time_bare_steps(model, x, y, amp, steps))
        seconds["fit (engine)"].append(time_fit_steps(model, loader, amp, steps, device))

    print(
        f"peak: {n} x {n} matmul in {str(dtype).removeprefix('torch.')}: {peak / 1e9:,.1f} GFLOP/s"
    )
    print(f"FLOPs per training step (forward + backward): {flops / 1e9:,.3f} GFLOP")
    header = f"{'loop':<14}{'ms/step':>10}{'images/s':>12}{'GFLOP/s':>12}{'of peak':>10}"
    print(header)
    print("-" * len(header))
    for name, values in seconds.items():
        t = statistics.median(values)
        achieved = flops / t
        print(
            f"{name:<14}{t * 1e3:>10.1f}{batch / t:>12,.0f}{achieved / 1e9:>12,.1f}"
            f"{achieved / peak:>10.3f}"
        )


if __name__ == "__main__":
    main()
