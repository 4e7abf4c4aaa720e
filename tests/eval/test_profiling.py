"""time_fn and peak_memory on known allocations (no timing assertions, only sanity)."""

import pytest
import torch

from vfm_course.eval import peak_memory, time_fn
from vfm_course.layers import chunked_attention, scaled_dot_product_attention

MB = 1_000_000


def test_time_fn_returns_positive_median_and_runs_warmup() -> None:
    calls = []
    seconds = time_fn(lambda x: calls.append(x), 1, repeats=3, warmup=2)
    assert isinstance(seconds, float)
    assert len(calls) == 5  # 2 warm-up calls, then 3 timed ones


def test_time_fn_bad_input() -> None:
    with pytest.raises(ValueError, match="repeats must be a positive integer, got 0"):
        time_fn(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup must be a non-negative integer"):
        time_fn(lambda: None, warmup=-1)
    with pytest.raises(TypeError, match="fn must be callable"):
        time_fn(3)


def test_peak_memory_counts_a_known_allocation() -> None:
    assert peak_memory(lambda: torch.zeros(1000, 1000)) >= 4 * MB


def test_peak_memory_subtracts_freed_tensors() -> None:
    def one_at_a_time() -> torch.Tensor:
        a = torch.zeros(1000, 1000)
        del a
        return torch.zeros(1000, 1000)  # may reuse a's memory: only one alive at a time

    def both_alive() -> torch.Tensor:
        a = torch.zeros(1000, 1000)
        b = torch.zeros(1000, 1000)
        return a + b

    assert 4 * MB <= peak_memory(one_at_a_time) < 5 * MB
    assert peak_memory(both_alive) >= 12 * MB


def test_peak_memory_ignores_views_and_inputs() -> None:
    x = torch.randn(1000, 1000)
    assert peak_memory(lambda t: t.transpose(0, 1)[:10], x) == 0
    assert peak_memory(lambda t: t.mul_(1.0), x) == 0
    assert peak_memory(lambda t: t * 2, x) >= 4 * MB


def test_chunked_attention_peaks_lower_than_explicit() -> None:
    q, k, v = (torch.randn(2, 2, 1024, 32) for _ in range(3))
    with torch.no_grad():
        explicit = peak_memory(scaled_dot_product_attention, q, k, v)
        chunked = peak_memory(lambda *a: chunked_attention(*a, chunk_size=128), *(q, k, v))
    score_bytes = 2 * 2 * 1024 * 1024 * 4
    assert explicit >= score_bytes  # the (B, h, L, S) scores exist at once
    assert chunked < explicit / 3
