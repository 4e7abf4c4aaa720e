"""Measure what a function costs: median wall time and peak tensor memory, on CPU or CUDA.

``time_fn`` runs a function a few times after a warm-up and returns the median, which shrugs
off the odd slow run on a shared machine. ``peak_memory`` reports the most bytes of tensor
storage alive at once while the function runs:

* on CUDA, from the caching allocator's own counter (``torch.cuda.max_memory_allocated``);
* on CPU, where torch keeps no such counter, by watching every operator through a
  ``TorchDispatchMode``: each new output storage is counted once when it appears and
  subtracted when it is freed (a ``weakref.finalize`` on the storage), and the running total's
  maximum is the peak. Scratch buffers an operator allocates and frees *inside* itself (a fused
  kernel's workspace) are invisible to this count; everything a Python-level algorithm keeps
  between operators -- score matrices, softmax outputs, saved activations -- is counted.

Both numbers vary a little from run to run and machine to machine: compare ratios measured in
one run, never absolute values across runs.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..core.validate import check_positive_int, is_int


def _sync() -> None:
    # CUDA kernels run asynchronously: wait for them, or we would time only the launch.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _uses_cuda(args: tuple[Any, ...]) -> bool:
    leaves, _ = tree_flatten(args)
    return any(isinstance(t, torch.Tensor) and t.is_cuda for t in leaves)


def time_fn(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` runs, after ``warmup`` runs."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_positive_int(repeats, "repeats")
    if not is_int(warmup) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    for _ in range(warmup):  # first calls pay for lazy init, allocator growth, caches
        fn(*args)
    times = []
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        fn(*args)
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _StorageTracker(TorchDispatchMode):
    """Counts the bytes of CPU storages created under this mode that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage id -> bytes, for storages made during the call
        self.seen_before: set[int] = set()  # storages that existed before the call (inputs)
        self.current = 0
        self.peak = 0
        self._finalizers: list[weakref.finalize] = []

    def _watch(self, storage: torch.UntypedStorage, on_free: Callable[[], None]) -> None:
        fin = weakref.finalize(storage, on_free)
        fin.atexit = False
        self._finalizers.append(fin)

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # Storages first met as inputs were made before the call: never count them (a view of
        # an input, such as x.transpose(...), shares its storage and costs no new memory).
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self.live and key not in self.seen_before:
                    self.seen_before.add(key)
                    self._watch(storage, lambda key=key: self.seen_before.discard(key))
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage._cdata
                if key in self.live or key in self.seen_before:
                    continue  # a view, or an in-place result: same storage, already counted
                self.live[key] = storage.nbytes()
                self.current += self.live[key]
                self._watch(storage, lambda key=key: self._freed(key))
        self.peak = max(self.peak, self.current)
        return out

    def close(self) -> None:
        for fin in self._finalizers:
            fin.detach()
        self._finalizers.clear()


def peak_memory(fn: Callable[..., Any], *args: Any) -> int:
    """Peak bytes of tensor memory allocated while ``fn(*args)`` runs, beyond what existed before.

    Uses CUDA's allocator statistics when any tensor in ``args`` lives on a GPU, else a CPU
    dispatch-mode tracker (see the module docstring), so pass the tensors as ``args`` rather
    than capturing them in a closure. The result returned by ``fn`` counts too: it is alive at
    the end of the call.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if _uses_cuda(args):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn(*args)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    tracker = _StorageTracker()
    try:
        with tracker:
            fn(*args)
    finally:
        tracker.close()
    return int(tracker.peak)
