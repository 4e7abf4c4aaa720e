"""From uint8 image arrays to batches: :func:`images_to_tensor` and :class:`BatchLoader`.

The tiny profile keeps whole datasets as tensors in memory; a ``BatchLoader`` draws shuffled
batches from them with its own seeded generator (and shards them per rank under ``torchrun``),
which is faster than a ``DataLoader`` over a few thousand 32x32 images and repeats exactly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..core.validate import check_positive_int, check_tensor, is_int


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, C) images -> float32 (n, C, H, W) in [0, 1]."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a uint8 numpy array (n, H, W, C), got {got}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)  # (n, C, H, W)


class BatchLoader:
    """Yield ``(x, y)`` batches from in-memory tensors by indexing, not per-item Python.

    ``images`` (n, ...) and ``labels`` (n, ...) share their first dimension (labels may be class
    ids (n,) or token ids (n, T)). ``transform`` runs on each whole batch (B, C, H, W), e.g.
    augmentation. With ``shuffle`` the order is a permutation seeded by ``(seed, epoch)``: call
    :meth:`set_epoch` before each epoch (as with ``DistributedSampler``) to get a new order that
    is still reproducible. :meth:`permutation` is the one place the order is made.

    Several processes: :meth:`shard` gives rank r of W its own loader over the same seeded
    order; ``batch_size`` stays the *global* batch and each rank yields ``batch_size // W``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        check_tensor(images, "images", ndim=(2, 3, 4, 5))
        check_tensor(labels, "labels")
        if len(labels) != len(images):
            raise ValueError(
                f"images and labels must have the same length, got {len(images)} images and "
                f"{len(labels)} labels"
            )
        check_positive_int(batch_size, "batch_size")
        if drop_last and batch_size > len(images):
            raise ValueError(
                f"batch_size {batch_size} is larger than the {len(images)} samples, so with "
                f"drop_last=True there would be no batch at all"
            )
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.transform, self.epoch = seed, transform, 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> BatchLoader:
        """This loader's share for process ``rank`` of ``world_size`` (a new loader over the
        same tensors; this one is unchanged), as ``DistributedSampler`` does for a DataLoader.

        Every rank makes the same seeded permutation and takes every ``world_size``-th index
        from position ``rank`` on, so the shares are disjoint and together they cover the
        epoch. Global batch b of the unsharded loader is exactly the union of the ranks' batch
        b (interleaved), each rank holding ``batch_size // world_size`` of it. Sizes that do not
        divide: with ``drop_last`` the last partial global batch is dropped; without it the
        order is padded by repeating its start (as ``DistributedSampler`` does) so every rank
        gets the same number of equal-sized batches, which DDP's lock-step needs.
        """
        check_positive_int(world_size, "world_size")
        if not is_int(rank) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer from 0 to {world_size - 1}, got {rank!r}")
        if self.world_size != 1:
            if (self.rank, self.world_size) == (rank, world_size):
                return self
            raise ValueError(
                f"this loader is already rank {self.rank}'s share of {self.world_size}; shard "
                f"the original loader instead"
            )
        if self.batch_size % world_size != 0:
            lo = self.batch_size - self.batch_size % world_size
            raise ValueError(
                f"batch_size {self.batch_size} (the global batch over all processes) is not "
                f"divisible by the {world_size} processes; pick a multiple of {world_size} "
                f"(e.g. {lo or world_size} or {lo + world_size}) so every process gets an "
                f"equal share"
            )
        shard = copy.copy(self)
        shard.rank, shard.world_size = rank, world_size
        return shard

    @property
    def local_batch_size(self) -> int:
        """Samples per batch this process yields: ``batch_size // world_size``."""
        return self.batch_size // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order the next iteration uses."""
        if not is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = epoch

    def permutation(self) -> torch.Tensor:
        """This epoch's order of all n samples, the same on every rank: int64 (n,)."""
        n = len(self.images)
        if not self.shuffle:
            return torch.arange(n)
        # SeedSequence mixes (seed, epoch) into one well-spread seed: nearby pairs such as
        # (0, 1) and (1, 0) get unrelated permutations.
        mixed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        return torch.randperm(n, generator=torch.Generator().manual_seed(int(mixed)))

    def indices(self) -> torch.Tensor:
        """The samples this loader yields this epoch, in order: int64. Unsharded, that is the
        whole :meth:`permutation` (n,); sharded, this rank's interleaved slice of it."""
        order = self.permutation()
        if self.world_size == 1:
            return order
        n, W = len(order), self.world_size
        if self.drop_last:
            order = order[: (n // self.batch_size) * self.batch_size]
        else:
            total = math.ceil(n / W) * W  # pad by wrapping around, as DistributedSampler does
            order = order.repeat(math.ceil(total / n))[:total]
        return order[self.rank :: W]

    def __len__(self) -> int:
        """Batches per epoch; the same for every shard (a shard's batches are smaller)."""
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order, size = self.indices(), self.local_batch_size
        for b in range(len(self)):
            idx = order[b * size : (b + 1) * size]
            x = self.images[idx.to(self.images.device)]  # (B, C, H, W)
            y = self.labels[idx.to(self.labels.device)]
            yield (self.transform(x) if self.transform is not None else x), y
