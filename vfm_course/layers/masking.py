"""Per-sample random masking by shuffle and restore, the trick at the heart of MAE.

A masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners",
Sec. 3) hides a random ``mask_ratio`` of each image's patch tokens and lets the encoder see only
the rest. Drawing a different random subset for every image *and* keeping the batch a dense
tensor is done without any loop or boolean indexing:

1. draw one noise value per token, ``noise`` (B, N);
2. ``ids_shuffle = argsort(noise)``: a random permutation per sample; the first ``N_keep``
   entries (the lowest noise) are the tokens that stay visible;
3. ``ids_restore = argsort(ids_shuffle)``: the inverse permutation, which puts a full-length
   sequence in shuffled order back into the original order (the decoder needs it to put its
   mask tokens where the removed patches were).

Every sample keeps the same number of tokens, so the visible tokens form a (B, N_keep, D)
tensor that a standard transformer processes at full speed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..core.validate import check_positive_int, check_tensor, is_number


class MaskedTokens(NamedTuple):
    """What :func:`random_masking` returns.

    Attributes:
        kept: (B, N_keep, D) the visible tokens, in shuffled (increasing-noise) order.
        mask: (B, N) float, 0 = kept, 1 = removed, in the *original* token order (MAE's
            convention, so it lines up with ``patchify`` and the loss).
        ids_restore: (B, N) long, the permutation that undoes the shuffle (see :func:`unshuffle`).
        ids_keep: (B, N_keep) long, the original index of every kept token.
    """

    kept: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor
    ids_keep: torch.Tensor


def check_mask_ratio(mask_ratio: object) -> float:
    """Check ``mask_ratio`` is a real number in [0, 1); return it as a float."""
    if not is_number(mask_ratio):
        raise TypeError(f"mask_ratio must be a float in [0, 1), got {mask_ratio!r}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(
            f"mask_ratio must be in [0, 1) (the fraction of patches hidden; at least one must stay "
            f"visible), got {mask_ratio!r}"
        )
    return float(mask_ratio)


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """How many of ``num_tokens`` tokens stay visible: ``N - floor(N * mask_ratio)``.

    The floor is taken robustly against float error: in floating point ``100 * 0.29`` is
    ``28.999999999999996`` and MAE's ``int(N * (1 - mask_ratio))`` keeps 0 of 10 tokens at
    ratio 0.9 (``10 * 0.1`` is ``0.9999999999999998``), so a product within 1e-9 of an integer
    counts as that integer. (For ratios that do not split N evenly this keeps one more token
    than MAE's formula: 10 tokens at 0.75 keep 3, not 2.)
    """
    n = check_positive_int(num_tokens, "number of tokens N")
    ratio = check_mask_ratio(mask_ratio)
    product = n * ratio
    nearest = round(product)
    removed = nearest if abs(product - nearest) < 1e-9 * max(1.0, product) else math.floor(product)
    keep = n - removed
    if keep < 1:
        raise ValueError(
            f"mask_ratio {ratio} removes all {n} tokens; at least one must stay visible "
            f"(use a smaller mask_ratio)"
        )
    return keep


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Pick tokens per sample: ``out[b, m] = x[b, ids[b, m]]``.

    Args:
        x: (B, N, D) tokens.
        ids: (B, M) long indices into ``N`` (any order, repeats allowed).

    Returns:
        (B, M, D).
    """
    x = check_tensor(x, "x", ndim=3)
    ids = check_tensor(ids, "ids", ndim=2)
    if ids.dtype != torch.long:
        raise TypeError(f"ids must be a long (int64) tensor of token indices, got {ids.dtype}")
    if ids.shape[0] != x.shape[0]:
        raise ValueError(
            f"ids has batch size {ids.shape[0]} but x has {x.shape[0]} "
            f"(ids {tuple(ids.shape)}, x {tuple(x.shape)})"
        )
    index = ids.unsqueeze(-1).expand(-1, -1, x.shape[-1])  # (B, M, D), a view, no copy
    return torch.gather(x, dim=1, index=index)  # (B, M, D)


def unshuffle(x_shuffled: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Undo the shuffle: full-length tokens in shuffled order -> original order.

    Args:
        x_shuffled: (B, N, D), token ``j`` is the one originally at ``ids_shuffle[b, j]``.
        ids_restore: (B, N), ``argsort(ids_shuffle)``.

    Returns:
        (B, N, D) with ``out[b, n]`` the token that came from original position ``n``.
    """
    x_shuffled = check_tensor(x_shuffled, "x_shuffled", ndim=3)
    ids_restore = check_tensor(ids_restore, "ids_restore", ndim=2)
    if ids_restore.shape[1] != x_shuffled.shape[1]:
        raise ValueError(
            f"unshuffle needs the full sequence: x_shuffled has {x_shuffled.shape[1]} tokens but "
            f"ids_restore has {ids_restore.shape[1]}; append the mask tokens before unshuffling"
        )
    return gather_tokens(x_shuffled, ids_restore)  # (B, N, D)


def insert_mask_tokens(
    x: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor, num_prefix: int = 0
) -> torch.Tensor:
    """The MAE decoder's input: the visible tokens plus one shared mask token per hidden patch,
    back in the patches' original order.

    Args:
        x: (B, num_prefix + N_keep, D), prefix tokens (e.g. CLS) first, then the visible
            tokens in shuffled order (as :func:`random_masking` kept them).
        mask_token: (1, 1, D), the learned vector that stands in for every hidden patch.
        ids_restore: (B, N), ``argsort(ids_shuffle)``.
        num_prefix: how many leading tokens of ``x`` are not patches; they stay in front,
            outside the unshuffle.

    Returns:
        (B, num_prefix + N, D): prefix tokens, then token ``n`` = patch ``n``'s visible token
        or the mask token. The visible tokens followed by the mask tokens are exactly the
        shuffled order, so one unshuffle puts every token at its patch's position.
    """
    x = check_tensor(x, "x", ndim=3)
    ids_restore = check_tensor(ids_restore, "ids_restore", ndim=2)
    B, length, dim = x.shape
    n = ids_restore.shape[1]
    if not num_prefix < length <= num_prefix + n:
        raise ValueError(
            f"x has {length} tokens; with {num_prefix} prefix token(s) and N = {n} patches it "
            f"must have between {num_prefix + 1} and {num_prefix + n}"
        )
    mask_tokens = mask_token.expand(B, num_prefix + n - length, dim)  # (B, N - N_keep, D)
    patches = torch.cat([x[:, num_prefix:], mask_tokens], dim=1)  # (B, N, D), shuffled order
    return torch.cat([x[:, :num_prefix], unshuffle(patches, ids_restore)], dim=1)


def random_masking(
    x: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> MaskedTokens:
    """Keep a random ``1 - mask_ratio`` of each sample's tokens (MAE's ``random_masking``).

    Args:
        x: (B, N, D) tokens (patch tokens only, no class token).
        mask_ratio: fraction of tokens removed, in [0, 1); see :func:`num_kept` for the count.
        noise: optional (B, N) scores that decide the order: the ``N_keep`` tokens with the
            *lowest* noise are kept. Default: ``torch.rand`` (uniform in [0, 1)).
        generator: random generator for the default noise (for reproducible masks).

    Returns:
        :class:`MaskedTokens` ``(kept, mask, ids_restore, ids_keep)``.
    """
    x = check_tensor(x, "x", ndim=3)
    b, n, _ = x.shape
    keep = num_kept(n, mask_ratio)
    if noise is None:
        noise = torch.rand(b, n, generator=generator, device=x.device)  # (B, N)
    else:
        noise = check_tensor(noise, "noise", shape=(b, n))
        noise = noise.to(x.device)

    # Sorting random noise gives a uniformly random permutation per sample. stable=True makes
    # ties (e.g. hand-written noise) resolve by position, so the same noise gives the same mask.
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # (B, N), kept tokens first
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)  # (B, N), inverse permutation
    ids_keep = ids_shuffle[:, :keep]  # (B, N_keep)
    kept = gather_tokens(x, ids_keep)  # (B, N_keep, D)

    # Build the mask in shuffled order (first N_keep are kept), then unshuffle it with the same
    # permutation as the tokens, so mask[b, n] refers to original token n.
    # float32 whatever x is (as MAE): counts of masked patches stay exact even under bf16.
    mask = torch.ones(b, n, dtype=torch.float32, device=x.device)  # (B, N)
    mask[:, :keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)  # (B, N), original order
    return MaskedTokens(kept, mask, ids_restore, ids_keep)
