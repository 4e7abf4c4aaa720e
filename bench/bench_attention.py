"""Time and peak memory of the lesson's attention kernels against torch's SDPA, across lengths.

    .venv/bin/python bench/bench_attention.py [--quick]

Self-attention with batch 8, 3 heads, head width 64, fp32, forward only (no autograd), on CUDA
when available, else CPU. Prints ratios measured in this run (time / SDPA's time, peak / SDPA's
peak, and chunked / explicit peak): absolute numbers vary with the machine and its load, ratios
much less. On CPU, peak memory is counted per operator (``vfm_course.eval.profiling``), so a fused
kernel's internal scratch space (SDPA's) is not included; it is small for flash-style kernels.
No assertions: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from vfm_course.eval import peak_memory, time_fn
from vfm_course.layers import chunked_attention, scaled_dot_product_attention

KERNELS = {
    "explicit": scaled_dot_product_attention,
    "chunked": lambda q, k, v: chunked_attention(q, k, v, chunk_size=128),
    "sdpa": F.scaled_dot_product_attention,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="lengths up to 1024, fewer repeats")
    args = parser.parse_args()
    lengths = [128, 256, 512, 1024] if args.quick else [128, 256, 512, 1024, 2048, 4096]
    repeats = 3 if args.quick else 5
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    B, h, d = 8, 3, 64
    print(
        f"attention forward, B={B} h={h} d={d} fp32 on {device} ({torch.get_num_threads()} "
        f"threads), chunk_size=128, median of {repeats}"
    )
    header = (
        f"{'L':>6} {'sdpa ms':>8} | {'time/sdpa: explicit':>19} {'chunked':>8} | "
        f"{'peak MB: sdpa':>13} {'explicit':>9} {'chunked':>8} | {'chunked/explicit mem':>20}"
    )
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    torch.manual_seed(0)
    for L in lengths:
        q, k, v = (torch.randn(B, h, L, d, device=device) for _ in range(3))
        seconds, peak = {}, {}
        with torch.no_grad():
            for name, fn in KERNELS.items():
                seconds[name] = time_fn(fn, q, k, v, repeats=repeats, warmup=1)
                peak[name] = peak_memory(fn, q, k, v)
        print(
            f"{L:>6} {seconds['sdpa'] * 1e3:>8.2f} | "
            f"{seconds['explicit'] / seconds['sdpa']:>18.1f}x "
            f"{seconds['chunked'] / seconds['sdpa']:>7.1f}x | "
            f"{peak['sdpa'] / 1e6:>13.1f} {peak['explicit'] / 1e6:>9.1f} "
            f"{peak['chunked'] / 1e6:>8.1f} | {peak['chunked'] / peak['explicit']:>20.2f}"
        )
        del q, k, v
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
