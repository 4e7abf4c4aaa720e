"""Lesson 04's exercises: random masking, the decoder's mask tokens, the masked-patch loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...layers.masking import gather_tokens, insert_mask_tokens, random_masking
from ...models.mae import masked_patch_loss
from .checking import call_learner, diagnose, expect_tensor, fail, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    rand_expr,
    randn_expr,
)

# --- lesson 04: masked autoencoders ------------------------------------------------------------


def check_random_masking(fn: Callable[..., Any]) -> bool:
    """Check ``fn(x, mask_ratio, noise)`` -> ``(kept, mask, ids_restore)``, MAE's random masking.

    x (B, N, D), noise (B, N). The ``N - floor(N * mask_ratio)`` tokens with the *lowest* noise
    are kept, in increasing-noise order: kept (B, N_keep, D); mask (B, N), 1 = removed, in the
    original token order; ids_restore (B, N) = argsort(argsort(noise)).
    """
    from ...layers.masking import gather_tokens, num_kept, random_masking

    ex = "check_random_masking"
    g = torch.Generator().manual_seed(401)
    cases = [(2, 16, 4, 0.75), (3, 20, 6, 0.5), (2, 25, 3, 0.6), (1, 8, 5, 0.25)]
    for B, N, D, ratio in cases:
        x, noise = randn(g, B, N, D), torch.rand(B, N, generator=g)
        keep = num_kept(N, ratio)
        out = call_learner(ex, fn, x, ratio, noise)
        if not (isinstance(out, tuple | list) and len(out) == 3):
            fail(ex, "return three things: (kept, mask, ids_restore)")
        case = f"for x {(B, N, D)}, mask_ratio={ratio}"
        kept, mask, ids_restore = out
        if isinstance(kept, torch.Tensor) and kept.ndim == 3 and kept.shape[1] != keep:
            fail(
                ex,
                f"you kept {kept.shape[1]} tokens {case}; expected N - floor(N * mask_ratio) "
                f"= {N} - {N - keep} = {keep}",
                "the number kept is len_keep = N - int(N * mask_ratio): mask_ratio is the "
                "fraction *removed*, and every sample keeps the same number",
            )
        kept = expect_tensor(ex, kept, (B, keep, D), "kept is (B, N_keep, D)")
        ref = random_masking(x, ratio, noise)
        ids_shuffle = noise.argsort(dim=1)  # (B, N)
        descending = noise.argsort(dim=1, descending=True)  # (B, N)
        wrong = {
            "you kept the tokens with the highest noise: keep the N_keep *lowest* "
            "(ids_shuffle = argsort(noise) ascending, ids_keep = ids_shuffle[:, :N_keep])": (
                gather_tokens(x, descending[:, :keep])
            ),
            "the kept tokens are in their original order; keep them in shuffled order "
            "(gather x at ids_keep = ids_shuffle[:, :N_keep]), as MAE does": gather_tokens(
                x, ids_shuffle[:, :keep].sort(dim=1).values
            ),
        }
        diagnose(ex, kept, ref.kept, wrong, f"in kept {case}")

        ids_restore = expect_tensor(ex, ids_restore, (B, N), "ids_restore is (B, N)")
        wrong = {
            "ids_restore equals ids_shuffle: you forgot the second argsort "
            "(ids_restore = argsort(ids_shuffle), the inverse permutation)": ids_shuffle,
        }
        diagnose(ex, ids_restore, ref.ids_restore, wrong, f"in ids_restore {case}")

        mask = expect_tensor(ex, mask, (B, N), "mask is (B, N), one entry per token")
        shuffled_mask = (torch.arange(N) >= keep).float().expand(B, N)  # (B, N)
        wrong = {
            "the mask is still in shuffled order (zeros first): unshuffle it with "
            "torch.gather(mask, 1, ids_restore) so mask[b, n] refers to token n": shuffled_mask,
            "the mask is inverted: 0 = kept, 1 = removed (MAE's convention, so the loss "
            "can multiply by it)": 1 - ref.mask,
        }
        diagnose(ex, mask.float(), ref.mask, wrong, f"in mask {case}")
    return passed(f"random masking matches the reference on {len(cases)} shapes and ratios")


def check_insert_mask_tokens(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(x, mask_token, ids_restore, num_prefix)`` -> the decoder's full sequence.

    x (B, num_prefix + N_keep, D) with the visible tokens in shuffled order, mask_token
    (1, 1, D), ids_restore (B, N) -> (B, num_prefix + N, D): the prefix tokens, then for each
    patch its visible token or the mask token, in the patches' original order.
    """
    ex = "check_insert_mask_tokens"
    g = torch.Generator().manual_seed(403)
    cases = [(2, 8, 3, 0.625, 1), (3, 10, 2, 0.5, 0), (1, 16, 4, 0.75, 1)]
    for B, N, D, ratio, prefix in cases:
        patches = randn(g, B, N, D)
        kept, _, ids_restore, _ = random_masking(patches, ratio, torch.rand(B, N, generator=g))
        x = torch.cat([randn(g, B, prefix, D), kept], dim=1)  # (B, prefix + N_keep, D)
        mask_token = randn(g, 1, 1, D)
        out = expect_tensor(
            ex,
            call_learner(ex, fn, x, mask_token, ids_restore, prefix),
            (B, prefix + N, D),
            "the decoder sees every patch plus the prefix tokens: (B, num_prefix + N, D). Keep "
            "the first num_prefix tokens of x in front, outside the unshuffle",
        )
        expected = insert_mask_tokens(x, mask_token, ids_restore, prefix)
        visible, front = x[:, prefix:], x[:, :prefix]
        fill = mask_token.expand(B, N - visible.shape[1], D)
        shuffled = torch.cat([visible, fill], dim=1)  # (B, N, D), the shuffled order
        wrong = {
            "the mask tokens go *after* the visible tokens: visible first, then mask tokens, "
            "is exactly the shuffled order that ids_restore undoes": torch.cat(
                [front, gather_tokens(torch.cat([fill, visible], dim=1), ids_restore)], dim=1
            ),
            "the sequence is still in shuffled order: gather it at ids_restore (unshuffle) so "
            "token n is patch n": torch.cat([front, shuffled], dim=1),
            "that applies the shuffle again instead of undoing it: gather at ids_restore, "
            "not at argsort(ids_restore)": torch.cat(
                [front, gather_tokens(shuffled, ids_restore.argsort(dim=1))], dim=1
            ),
        }
        case = f"for B={B}, N={N}, {visible.shape[1]} visible, {prefix} prefix token(s)"
        diagnose(ex, out, expected, wrong, case)
    return passed(
        f"the decoder's sequence matches the reference on {len(cases)} shapes, with and "
        "without a class token"
    )


def check_mae_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(pred, target, mask)`` -> scalar: the per-patch MSE (mean over a patch's
    pixels), averaged over the masked patches only. pred, target (B, N, P*P*C); mask (B, N)
    with 1 = removed."""
    ex = "check_mae_loss"
    g = torch.Generator().manual_seed(402)
    cases = [(2, 16, 12, 0.75), (3, 9, 4, 0.5), (1, 25, 48, 0.6)]
    for B, N, K, ratio in cases:
        pred, target = randn(g, B, N, K), randn(g, B, N, K)
        # Per sample, a random ratio of the patches is masked (as random_masking makes them).
        removed = round(N * ratio)
        ranks = torch.rand(B, N, generator=g).argsort(dim=1).argsort(dim=1)  # (B, N)
        mask = (ranks < removed).float()  # (B, N)
        out = expect_tensor(
            ex, call_learner(ex, fn, pred, target, mask), (), "return one number (a 0-d tensor)"
        )
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # (B, N)
        expected = (per_patch * mask).sum() / mask.sum()
        summed_pixels = (((pred - target) ** 2).sum(dim=-1) * mask).sum() / mask.sum()
        wrong = {
            "you averaged over all patches: only the masked ones count (visible patches were "
            "seen by the encoder, so predicting them is copying): (loss * mask).sum() / "
            "mask.sum()": per_patch.mean(),
            "you averaged over the visible patches: mask is 1 where a patch was *removed*, "
            "and those are the ones to score": (per_patch * (1 - mask)).sum() / (1 - mask).sum(),
            "you summed the masked patches' errors: divide by the number of masked patches "
            "(mask.sum()) to get a mean": (per_patch * mask).sum(),
            "you summed the squared errors over everything: take the mean over each patch's "
            "pixels, then average over the masked patches": (
                ((pred - target) ** 2) * mask[..., None]
            ).sum(),
            "average each patch's squared error over its pixels (.mean(dim=-1)), don't "
            "sum it": summed_pixels,
        }
        diagnose(ex, out, expected, wrong, f"for pred {(B, N, K)}, {removed} of {N} masked")
    return passed(f"the MAE loss matches the reference on {len(cases)} shapes")


def random_masking_reference(x, mask_ratio, noise):
    """(B, N, D) tokens -> kept (B, N_keep, D), mask (B, N), ids_restore (B, N)."""
    kept, mask, ids_restore, _ = random_masking(x, mask_ratio, noise)
    return kept, mask, ids_restore


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "04_masked_autoencoders"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="random_masking",
        notebook=NOTEBOOK,
        functions=("my_random_masking",),
        cells=("ex-random_masking",),
        checker=check_random_masking,
        references=(random_masking_reference,),
        hidden=(
            HiddenCase(
                "ratio 0.75",
                f"my_random_masking({randn_expr(2, 16, 4)}, 0.75, {rand_expr(2, 16)})",
            ),
            HiddenCase(
                "ratio 0.5",
                f"my_random_masking({randn_expr(3, 10, 2)}, 0.5, {rand_expr(3, 10)})",
            ),
        ),
        seed=7401,
        forbidden=("MaskedAutoencoder",),
    ),
    Exercise(
        name="insert_mask_tokens",
        notebook=NOTEBOOK,
        functions=("my_insert_mask_tokens",),
        cells=("ex-insert_mask_tokens",),
        checker=check_insert_mask_tokens,
        references=(insert_mask_tokens,),
        hidden=(
            HiddenCase(
                "CLS + 4 of 16 patches",
                "(lambda p, r: my_insert_mask_tokens(_torch.cat([p[:, :1], p[:, 1:][:, "
                "r.argsort(1)[0, :4]]], 1), 2 * p[:1, :1], r, 1))"
                f"({randn_expr(1, 17, 3)}, {rand_expr(1, 16)}.argsort(1).argsort(1))",
            ),
            HiddenCase(
                "5 of 10 patches, no prefix",
                "(lambda p, r: my_insert_mask_tokens(_torch.gather(p, 1, r.argsort(1)[:, :5, None]"
                ".expand(-1, -1, 2)), p[:1, :1], r, 0))"
                f"({randn_expr(2, 10, 2)}, {rand_expr(2, 10)}.argsort(1).argsort(1))",
            ),
        ),
        seed=7403,
        forbidden=("MaskedAutoencoder", "forward_decoder", "random_masking"),
    ),
    Exercise(
        name="mae_loss",
        notebook=NOTEBOOK,
        functions=("my_mae_loss",),
        cells=("ex-mae_loss",),
        checker=check_mae_loss,
        references=(masked_patch_loss,),
        hidden=(
            HiddenCase(
                "half masked",
                f"my_mae_loss({randn_expr(2, 8, 12)}, {randn_expr(2, 8, 12)}, "
                f"(_torch.arange(8) % 2).float().expand(2, 8))",
            ),
            HiddenCase(
                "random mask",
                f"my_mae_loss({randn_expr(3, 6, 4)}, {randn_expr(3, 6, 4)}, "
                f"(({rand_expr(3, 6)} > 0.4) | (_torch.arange(6) == 0)).float())",
            ),
        ),
        seed=7402,
        forbidden=("masked_patch_loss", "MaskedAutoencoder"),
    ),
)
