"""Exercise checkers: instant, learner-worded feedback for the notebooks' exercises.

Every ``check_<exercise>(fn, ...)`` follows the same contract, shared by notebooks and tests:

* it calls the learner's ``fn`` on hidden inputs it draws itself (several shapes, masks where
  they matter) from a private seeded generator, so it neither reads nor disturbs the notebook's
  variables or random stream;
* it compares the result with the package's reference implementation within float tolerance;
* on success it prints one line starting with "✓" and returns ``True``;
* on failure it raises ``AssertionError`` with what went wrong and a hint. Common mistakes are
  recognised by comparing the answer with known-wrong variants (missing 1/sqrt(d) scale,
  softmax over the wrong dimension, mask ignored, ...);
* errors raised inside ``fn`` are caught and explained (with the learner's line that raised),
  never shown as a bare stack trace; ``NotImplementedError`` means "exercise not finished yet".

New checkers reuse the private helpers below (``_run``, ``_expect_tensor``, ``_diagnose``,
``_fail``, ``_passed``).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import torch

from .attention import scaled_dot_product_attention, split_heads
from .detection import box_convert, box_iou, nms
from .profiling import peak_memory

_ATOL, _RTOL = 1e-5, 1e-4

# Substrings of common torch errors -> what they usually mean in an exercise.
_ERROR_HINTS = {
    "view size is not compatible": "after a transpose/permute the tensor is not contiguous: "
    "use .reshape(...) (or .contiguous().view(...)) instead of .view(...)",
    "cannot be multiplied": "the shapes of a matmul do not line up: print the shapes of both "
    "operands; to multiply q by k's rows use k.transpose(-2, -1)",
    "must match the size of tensor": "two tensors' shapes do not broadcast: print their shapes",
    "not defined": "a name is missing: did you run the cells above (imports, helpers) first?",
}


# --- reporting helpers -------------------------------------------------------------------------


def _fail(exercise: str, problem: str, hint: str | None = None) -> NoReturn:
    """Raise the learner-facing AssertionError (without chaining the internal traceback)."""
    message = f"{exercise}: {problem}"
    if hint:
        message += f"\nHint: {hint}"
    raise AssertionError(message) from None


def _passed(message: str) -> bool:
    print(f"✓ {message}")
    return True


def _learner_line(exc: BaseException, fn: Callable[..., Any]) -> str:
    """'line 7: scores = q @ k.T' for the innermost frame inside the learner's function."""
    code = getattr(fn, "__code__", None)
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if code is not None and f.filename == code.co_filename]
    if not mine:
        return ""
    frame = mine[-1]
    source = (frame.line or "").strip()
    return f" (at line {frame.lineno}: {source})" if source else f" (at line {frame.lineno})"


def _run(exercise: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call the learner's ``fn(*args)``; turn any exception into a learner-facing failure.

    Tensors are passed as copies, so an answer that edits its inputs in place (``q /= ...``)
    cannot change the inputs the reference is computed on.
    """
    if not callable(fn):
        _fail(exercise, f"expected a function, got {type(fn).__name__}")
    args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
    try:
        return fn(*args)
    except NotImplementedError:
        _fail(
            exercise,
            "exercise not finished yet",
            "replace `raise NotImplementedError` with your code, run that cell, then this one",
        )
    except Exception as exc:  # the learner's code can raise anything: explain it, don't crash
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, torch.Tensor))
        hint = next((h for key, h in _ERROR_HINTS.items() if key in str(exc)), None)
        _fail(
            exercise,
            f"your function raised {type(exc).__name__}: {exc}{_learner_line(exc, fn)}"
            f"\n(called with tensors of shape {shapes})",
            hint,
        )


def _expect_tensor(
    exercise: str, out: object, shape: tuple[int, ...], hint: str | None = None
) -> torch.Tensor:
    """Check the answer is one tensor of ``shape``; return it."""
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        _fail(exercise, f"your function returned a tuple of {len(out)}; return one tensor")
    if not isinstance(out, torch.Tensor):
        _fail(exercise, f"your function returned {type(out).__name__}, expected a tensor")
    if tuple(out.shape) != tuple(shape):
        _fail(exercise, f"output has shape {tuple(out.shape)}, expected {tuple(shape)}", hint)
    return out


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    a = a.detach().to(device=b.device, dtype=b.dtype)  # a float64 answer is fine too
    return torch.allclose(a, b, atol=_ATOL, rtol=_RTOL, equal_nan=True)


def _diagnose(
    exercise: str,
    out: torch.Tensor,
    expected: torch.Tensor,
    wrong_variants: Mapping[str, torch.Tensor],
    case: str,
) -> None:
    """Pass if ``out`` matches ``expected``; else fail with the hint of a matching wrong variant."""
    if _close(out, expected):
        return
    for hint, wrong in wrong_variants.items():
        if _close(out, wrong):
            _fail(exercise, f"wrong values {case}", hint)
    if not torch.isfinite(out).all():
        _fail(
            exercise,
            f"output contains NaN or inf {case}",
            "a softmax over a row of only -inf gives NaN; exp of large scores overflows "
            "(subtract the row max first)",
        )
    err = (out.detach().to(expected.dtype) - expected).abs().max().item()
    _fail(
        exercise,
        f"wrong values {case}: max |yours - reference| = {err:.3g}",
        "compare your intermediate shapes and values with the step-by-step cells above",
    )


def _randn(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=generator)


# --- lesson 01: attention ----------------------------------------------------------------------


def check_attention(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(q, k, v, mask=None)`` against softmax(q k^T / sqrt(d) + mask) v.

    q (B, h, L, d), k (B, h, S, d), v (B, h, S, dv) -> (B, h, L, dv); ``mask`` is boolean,
    broadcastable to (B, h, L, S), True where a query may attend (torch SDPA's convention).
    """
    ex = "check_attention"
    g = torch.Generator().manual_seed(101)
    n_cases = 0
    for B, h, L, S, d, dv in [(2, 3, 5, 5, 8, 8), (1, 2, 7, 11, 16, 4)]:
        q, k, v = _randn(g, B, h, L, d), _randn(g, B, h, S, d), _randn(g, B, h, S, dv)
        out = _expect_tensor(
            ex, _run(ex, fn, q, k, v), (B, h, L, dv), "the output is weights @ v: (B, h, L, dv)"
        )
        wrong = {
            "did you forget the 1/sqrt(d) scale? divide the scores by math.sqrt(d), "
            "with d = q.shape[-1]": scaled_dot_product_attention(q, k, v, scale=1.0),
            "the scale is 1/sqrt(d), not 1/d": scaled_dot_product_attention(q, k, v, scale=1 / d),
            "divide the scores by sqrt(d), don't multiply": scaled_dot_product_attention(
                q, k, v, scale=d**0.5
            ),
            "softmax over the wrong dimension: normalise over the keys (dim=-1), so each "
            "query's weights sum to 1": ((q @ k.transpose(-2, -1)) / d**0.5).softmax(-2) @ v,
        }
        case = f"for q {tuple(q.shape)}, k {tuple(k.shape)}, no mask"
        _diagnose(ex, out, scaled_dot_product_attention(q, k, v), wrong, case)
        n_cases += 1

    B, h, L, S, d = 2, 2, 6, 6, 8
    q, k, v = _randn(g, B, h, L, d), _randn(g, B, h, S, d), _randn(g, B, h, S, d)
    padding = (torch.arange(S) < torch.tensor([6, 3])[:, None])[:, None, None, :]  # (B, 1, 1, S)
    causal = torch.ones(L, S, dtype=torch.bool).tril()  # (L, S)
    for name, mask in [("a padding mask (B, 1, 1, S)", padding), ("a causal mask (L, S)", causal)]:
        out = _expect_tensor(ex, _run(ex, fn, q, k, v, mask), (B, h, L, d))
        scores = (q @ k.transpose(-2, -1)) / d**0.5  # (B, h, L, S)
        wrong = {
            "the mask seems to be ignored: set the scores of blocked keys to -inf before the "
            "softmax, e.g. scores.masked_fill(~mask, float('-inf'))": (
                scaled_dot_product_attention(q, k, v)
            ),
            "the mask looks inverted: True means 'may attend' (torch SDPA's convention), so "
            "fill -inf where the mask is False": (
                scores.masked_fill(mask, float("-inf")).softmax(-1) @ v  # NaN where all blocked
            ),
            "you masked after the softmax, so the weights no longer sum to 1: mask the scores "
            "(with -inf) before the softmax": (scores.softmax(-1) * mask) @ v,
        }
        case = f"with {name}"
        _diagnose(ex, out, scaled_dot_product_attention(q, k, v, mask), wrong, case)
        n_cases += 1
    return _passed(f"attention matches the reference on {n_cases} cases (with and without masks)")


def check_split_merge_heads(
    split_fn: Callable[[torch.Tensor, int], torch.Tensor],
    merge_fn: Callable[[torch.Tensor], torch.Tensor],
) -> bool:
    """Check ``split_fn(x, num_heads)``: (B, L, D) -> (B, h, L, d) and ``merge_fn`` back."""
    ex = "check_split_merge_heads"
    g = torch.Generator().manual_seed(202)
    for B, L, D, h in [(2, 5, 12, 3), (1, 7, 8, 1), (3, 4, 6, 6)]:
        x = _randn(g, B, L, D)
        d = D // h
        expected = split_heads(x, h)  # (B, h, L, d)
        out = _expect_tensor(
            ex,
            _run(ex, split_fn, x, h),
            (B, h, L, d),
            "split (B, L, D) into (B, h, L, d): reshape to (B, L, h, d), then transpose(1, 2)",
        )
        wrong = {
            "you reshaped straight to (B, h, L, d), which mixes tokens into heads: reshape to "
            "(B, L, h, d) first, then .transpose(1, 2)": x.reshape(B, h, L, d),
            "the channels are split the wrong way: head i should own the contiguous block "
            "[i*d, (i+1)*d) -- reshape to (B, L, h, d), not (B, L, d, h)": x.reshape(
                B, L, d, h
            ).permute(0, 3, 1, 2),
        }
        _diagnose(ex, out, expected, wrong, f"from split_fn for x {tuple(x.shape)}, {h} heads")

        merged = _expect_tensor(
            ex,
            _run(ex, merge_fn, expected.contiguous()),  # as attention outputs are
            (B, L, D),
            "merge (B, h, L, d) back to (B, L, D) with D = h * d",
        )
        wrong = {
            "transpose(1, 2) back to (B, L, h, d) before reshaping to (B, L, D)": (
                expected.reshape(B, L, D)
            ),
        }
        _diagnose(ex, merged, x, wrong, f"from merge_fn for a (B, h, L, d) = {(B, h, L, d)} input")
    return _passed("split_heads and merge_heads match the reference and invert each other")


def _buggy_online_attention(q, k, v, chunk_size: int, bug: str) -> torch.Tensor:
    """The online-softmax recurrence with one known mistake, for recognising it in answers."""
    q = q / q.shape[-1] ** 0.5
    acc = torch.zeros(*q.shape[:-1], v.shape[-1])
    m = torch.full((*q.shape[:-1], 1), float("-inf"))
    denom = torch.zeros(*q.shape[:-1], 1)
    for start in range(0, k.shape[-2], chunk_size):
        s = q @ k[..., start : start + chunk_size, :].transpose(-2, -1)  # (..., L, c)
        m_new = torch.maximum(m, s.amax(-1, keepdim=True))
        p, rescale = torch.exp(s - m_new), torch.exp(m - m_new)
        denom = (denom if bug == "denominator" else denom * rescale) + p.sum(-1, keepdim=True)
        pv = p @ v[..., start : start + chunk_size, :]
        acc = (acc if bug == "accumulator" else acc * rescale) + pv
        m = m_new
    return acc if bug == "no_division" else acc / denom


def check_online_softmax_attention(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(q, k, v, chunk_size)``: attention computed chunk by chunk with an online softmax.

    q (B, h, L, d), k (B, h, S, d), v (B, h, S, dv) -> (B, h, L, dv), equal to the explicit
    version for every ``chunk_size`` (including ones that do not divide S), and without ever
    holding the full (L, S) score matrix (its peak memory is measured).
    """
    ex = "check_online_softmax_attention"
    g = torch.Generator().manual_seed(303)
    cases = [(2, 3, 10, 10, 8, 8, 16), (2, 3, 10, 10, 8, 8, 4), (2, 3, 10, 10, 8, 8, 1)]
    cases += [(1, 2, 6, 13, 8, 3, 5)]
    for B, h, L, S, d, dv, chunk in cases:
        # Scores spread wide enough that the running max changes from chunk to chunk.
        q, k, v = 2 * _randn(g, B, h, L, d), 2 * _randn(g, B, h, S, d), _randn(g, B, h, S, dv)
        out = _expect_tensor(ex, _run(ex, fn, q, k, v, chunk), (B, h, L, dv))
        bug = lambda name, q=q, k=k, v=v, c=chunk: _buggy_online_attention(q, k, v, c, name)
        wrong = {
            "did you forget the 1/sqrt(d) scale on the scores?": (
                scaled_dot_product_attention(q, k, v, scale=1.0)
            ),
            "when the running max grows from m to m_new, rescale the accumulated output by "
            "exp(m - m_new) too": bug("accumulator"),
            "when the running max grows from m to m_new, rescale the running denominator by "
            "exp(m - m_new) too": bug("denominator"),
            "divide the accumulated output by the running denominator at the end": bug(
                "no_division"
            ),
        }
        case = f"for S={S} keys in chunks of {chunk}"
        _diagnose(ex, out, scaled_dot_product_attention(q, k, v), wrong, case)

    # Memory: a chunked answer must stay well below the explicit version's (L, S) matrices.
    q, k, v = (_randn(g, 2, 2, 512, 32) for _ in range(3))
    with torch.no_grad():
        explicit = peak_memory(scaled_dot_product_attention, q, k, v)
        yours = peak_memory(lambda *a: _run(ex, fn, *a, 32), q, k, v)
    if yours > 0.5 * explicit:
        _fail(
            ex,
            f"correct values, but your peak memory ({yours / 1e6:.1f} MB) is close to the explicit "
            f"version's ({explicit / 1e6:.1f} MB) at L = S = 512, chunk_size = 32",
            "compute the scores one chunk at a time (k[..., start:end, :]) and never build or "
            "concatenate the full (L, S) score matrix",
        )
    return _passed(
        f"online-softmax attention matches the reference on {len(cases)} chunk sizes "
        "and peaks at less than half of the explicit version's memory"
    )


# --- lesson 02: vision transformer -------------------------------------------------------------


def check_patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Check ``fn(imgs, patch_size)``: (B, C, H, W) -> (B, N, P*P*C), patches in row-major
    grid order, pixels inside a patch ordered (P, P, C) as in MAE."""
    from .patches import patchify

    exercise = "patchify"
    g = torch.Generator().manual_seed(2)
    for B, C, H, W, P in [(2, 3, 8, 8, 4), (1, 1, 6, 4, 2), (3, 3, 32, 32, 8)]:
        imgs = _randn(g, B, C, H, W)
        out = _run(exercise, fn, imgs, P)
        N = (H // P) * (W // P)
        out = _expect_tensor(
            exercise,
            out,
            (B, N, P * P * C),
            "reshape to (B, C, Gh, P, Gw, P), permute so the grid axes come first and each "
            "patch's pixels last, then flatten",
        )
        grid = imgs.reshape(B, C, H // P, P, W // P, P)  # (B, C, Gh, P, Gw, P)
        wrong = {
            "each patch's pixels come out in (C, P, P) order; put the channel axis last "
            "(MAE's order: row, column, channel)": grid.permute(0, 2, 4, 1, 3, 5).reshape(B, N, -1),
            "the patch grid is walked column by column; walk it row by row (Gh before Gw)": (
                grid.permute(0, 4, 2, 3, 5, 1).reshape(B, N, -1)
            ),
            "a plain reshape without a permute mixes pixels of different patches": imgs.reshape(
                B, N, -1
            ),
        }
        _diagnose(exercise, out, patchify(imgs, P), wrong, f"for images {B}x{C}x{H}x{W}, P={P}")
    return _passed("patchify matches the reference on 3 image/patch sizes")


def check_sincos_pos_embed_2d(fn: Callable[[int, int], torch.Tensor]) -> bool:
    """Check ``fn(embed_dim, grid_size)`` -> (grid_size**2, embed_dim): the first half of the
    width encodes the column (x), the second half the row (y), each with the 1-D sin-cos table."""
    from .pos_embed import sincos_pos_embed_1d, sincos_pos_embed_2d

    exercise = "2-D sin-cos position embedding"
    for D, G in [(16, 4), (64, 8), (8, 3)]:
        out = _run(exercise, fn, D, G)
        out = _expect_tensor(exercise, out, (G * G, D), "one row per patch, rows in grid order")
        ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
        ex = sincos_pos_embed_1d(D // 2, xs.reshape(-1).float())
        ey = sincos_pos_embed_1d(D // 2, ys.reshape(-1).float())
        wrong = {
            "rows and columns are swapped: the first half encodes the column (x), the second "
            "the row (y), as in MAE": torch.cat([ey, ex], dim=1),
            "each half must use D/2 of the width; you encoded with the full width D "
            "and cut": torch.cat(
                [
                    sincos_pos_embed_1d(D, xs.reshape(-1).float())[:, : D // 2],
                    sincos_pos_embed_1d(D, ys.reshape(-1).float())[:, : D // 2],
                ],
                dim=1,
            ),
        }
        _diagnose(exercise, out.float(), sincos_pos_embed_2d(D, G), wrong, f"for D={D}, grid={G}")
    return _passed("2-D sin-cos position embedding matches the reference (3 sizes)")


# --- lesson 03: CLIP ---------------------------------------------------------------------------


def check_clip_loss(fn: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(logits_per_image)``: (B, B) logits whose matching image-caption pairs lie on
    the diagonal -> a scalar, the mean of the image->text and text->image cross-entropies."""
    import torch.nn.functional as F

    from .clip import clip_loss

    ex = "check_clip_loss"
    g = torch.Generator().manual_seed(404)
    sizes = (5, 2, 8)  # B = 5 first: at B = 2 "summed over the batch" equals "added directions"
    for B in sizes:
        logits = 3 * _randn(g, B, B)
        out = _expect_tensor(
            ex,
            _run(ex, fn, logits),
            (),
            "return one number (a 0-d tensor): cross_entropy's default reduction averages "
            "over the batch",
        )
        diag, zeros = torch.arange(B), torch.zeros(B, dtype=torch.long)
        i2t, t2i = F.cross_entropy(logits, diag), F.cross_entropy(logits.T, diag)
        wrong = {
            "only the image->text direction (cross-entropy over the rows of logits): CLIP's "
            "loss is symmetric, so also take the cross-entropy of logits.T (text->image) and "
            "average the two": i2t,
            "only the text->image direction (logits.T): also take the image->text "
            "cross-entropy over the rows of logits, and average the two": t2i,
            "you added the two directions: take their mean, (loss_i2t + loss_t2i) / 2": i2t + t2i,
            "you summed over the batch: average the cross-entropy over the B pairs "
            "(reduction='mean', cross_entropy's default)": 0.5
            * (
                F.cross_entropy(logits, diag, reduction="sum")
                + F.cross_entropy(logits.T, diag, reduction="sum")
            ),
            "the targets must be the diagonal: image i belongs with caption i, so "
            "targets = torch.arange(B)": 0.5
            * (F.cross_entropy(logits, zeros) + F.cross_entropy(logits.T, zeros)),
            "cross_entropy applies log-softmax itself: pass it the raw logits, not "
            "softmax probabilities": 0.5
            * (
                F.cross_entropy(logits.softmax(-1), diag)
                + F.cross_entropy(logits.T.softmax(-1), diag)
            ),
        }
        _diagnose(ex, out, clip_loss(logits), wrong, f"for a {B}x{B} logit matrix")
    return _passed(f"the symmetric CLIP loss matches the reference for B = {sizes}")


# --- lesson 04: masked autoencoders ------------------------------------------------------------


def check_random_masking(fn: Callable[..., Any]) -> bool:
    """Check ``fn(x, mask_ratio, noise)`` -> ``(kept, mask, ids_restore)``, MAE's random masking.

    x (B, N, D), noise (B, N). The ``N - floor(N * mask_ratio)`` tokens with the *lowest* noise
    are kept, in increasing-noise order: kept (B, N_keep, D); mask (B, N), 1 = removed, in the
    original token order; ids_restore (B, N) = argsort(argsort(noise)).
    """
    from .masking import gather_tokens, num_kept, random_masking

    ex = "check_random_masking"
    g = torch.Generator().manual_seed(401)
    cases = [(2, 16, 4, 0.75), (3, 20, 6, 0.5), (2, 25, 3, 0.6), (1, 8, 5, 0.25)]
    for B, N, D, ratio in cases:
        x, noise = _randn(g, B, N, D), torch.rand(B, N, generator=g)
        keep = num_kept(N, ratio)
        out = _run(ex, fn, x, ratio, noise)
        if not (isinstance(out, tuple | list) and len(out) == 3):
            _fail(ex, "return three things: (kept, mask, ids_restore)")
        case = f"for x {(B, N, D)}, mask_ratio={ratio}"
        kept, mask, ids_restore = out
        if isinstance(kept, torch.Tensor) and kept.ndim == 3 and kept.shape[1] != keep:
            _fail(
                ex,
                f"you kept {kept.shape[1]} tokens {case}; expected N - floor(N * mask_ratio) "
                f"= {N} - {N - keep} = {keep}",
                "the number kept is len_keep = N - int(N * mask_ratio): mask_ratio is the "
                "fraction *removed*, and every sample keeps the same number",
            )
        kept = _expect_tensor(ex, kept, (B, keep, D), "kept is (B, N_keep, D)")
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
        _diagnose(ex, kept, ref.kept, wrong, f"in kept {case}")

        ids_restore = _expect_tensor(ex, ids_restore, (B, N), "ids_restore is (B, N)")
        wrong = {
            "ids_restore equals ids_shuffle: you forgot the second argsort "
            "(ids_restore = argsort(ids_shuffle), the inverse permutation)": ids_shuffle,
        }
        _diagnose(ex, ids_restore, ref.ids_restore, wrong, f"in ids_restore {case}")

        mask = _expect_tensor(ex, mask, (B, N), "mask is (B, N), one entry per token")
        shuffled_mask = (torch.arange(N) >= keep).float().expand(B, N)  # (B, N)
        wrong = {
            "the mask is still in shuffled order (zeros first): unshuffle it with "
            "torch.gather(mask, 1, ids_restore) so mask[b, n] refers to token n": shuffled_mask,
            "the mask is inverted: 0 = kept, 1 = removed (MAE's convention, so the loss "
            "can multiply by it)": 1 - ref.mask,
        }
        _diagnose(ex, mask.float(), ref.mask, wrong, f"in mask {case}")
    return _passed(f"random masking matches the reference on {len(cases)} shapes and ratios")


def check_mae_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(pred, target, mask)`` -> scalar: the per-patch MSE (mean over a patch's
    pixels), averaged over the masked patches only. pred, target (B, N, P*P*C); mask (B, N)
    with 1 = removed."""
    ex = "check_mae_loss"
    g = torch.Generator().manual_seed(402)
    cases = [(2, 16, 12, 0.75), (3, 9, 4, 0.5), (1, 25, 48, 0.6)]
    for B, N, K, ratio in cases:
        pred, target = _randn(g, B, N, K), _randn(g, B, N, K)
        # Per sample, a random ratio of the patches is masked (as random_masking makes them).
        removed = round(N * ratio)
        ranks = torch.rand(B, N, generator=g).argsort(dim=1).argsort(dim=1)  # (B, N)
        mask = (ranks < removed).float()  # (B, N)
        out = _expect_tensor(
            ex, _run(ex, fn, pred, target, mask), (), "return one number (a 0-d tensor)"
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
        _diagnose(ex, out, expected, wrong, f"for pred {(B, N, K)}, {removed} of {N} masked")
    return _passed(f"the MAE loss matches the reference on {len(cases)} shapes")


# --- lesson 03: contrastive learning -----------------------------------------------------------


def _nt_xent_variant(z1: torch.Tensor, z2: torch.Tensor, t: float, bug: str) -> torch.Tensor:
    """NT-Xent with one known mistake (or none, ``bug=""``), for recognising it in answers."""
    import torch.nn.functional as F

    B = z1.shape[0]
    z = torch.cat([z1, z2])  # (2B, D)
    if bug != "no_normalize":
        z = F.normalize(z, dim=1)
    scale = {"multiply": t, "ignore": 1.0}.get(bug, 1 / t)
    sim = z @ z.T * scale  # (2B, 2B)
    partner = torch.cat([torch.arange(B) + B, torch.arange(B)])  # (2B,) row i's other view
    if bug == "clip":  # only the other view's images as candidates: B-way, both directions
        cross, labels = sim[:B, B:], torch.arange(B)  # (B, B) z1-to-z2 similarities
        return (F.cross_entropy(cross, labels) + F.cross_entropy(cross.T, labels)) / 2
    if bug != "self":
        sim = sim.masked_fill(torch.eye(2 * B, dtype=torch.bool), float("-inf"))
    losses = F.cross_entropy(sim, partner, reduction="none")  # (2B,)
    if bug == "one_direction":
        return losses[:B].mean()
    return losses.sum() if bug == "sum" else losses.mean()


def check_nt_xent(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(z1, z2, temperature)`` -> the scalar NT-Xent loss of SimCLR.

    z1, z2 (B, D) are the two views' embeddings (row i of each from the same image); the loss is
    the mean over all 2B views of the cross-entropy of picking the partner among the 2B-1 other
    views, with cosine similarities divided by ``temperature``.
    """
    from .contrastive import nt_xent_loss

    ex = "check_nt_xent"
    g = torch.Generator().manual_seed(303)
    cases = [(4, 8, 0.5), (2, 16, 0.1), (7, 5, 0.2)]
    for B, D, t in cases:
        # Rows of different lengths, so an answer that skips the L2-normalisation shows.
        scale = 0.5 + 2 * torch.rand(2, B, 1, generator=g)
        z1, z2 = _randn(g, B, D) * scale[0], _randn(g, B, D) * scale[1]
        out = _expect_tensor(
            ex,
            _run(ex, fn, z1, z2, t),
            (),
            "return one number, the mean loss (shape ()); F.cross_entropy averages by default",
        )
        wrong = {
            "did you forget to L2-normalise the embeddings? the similarity is the cosine: "
            "F.normalize(z, dim=1) before the matmul": _nt_xent_variant(z1, z2, t, "no_normalize"),
            "each view's similarity with itself is still a candidate (a 2B-way "
            "classification): remove the diagonal, or fill it with -inf before the "
            "cross-entropy": _nt_xent_variant(z1, z2, t, "self"),
            "divide the similarities by the temperature, don't multiply": _nt_xent_variant(
                z1, z2, t, "multiply"
            ),
            "the temperature seems to be ignored: divide the cosine similarities by "
            "it": _nt_xent_variant(z1, z2, t, "ignore"),
            "only the B views of z1 are anchors: every one of the 2B views (z2's too) must "
            "find its partner, and the loss averages over all 2B": _nt_xent_variant(
                z1, z2, t, "one_direction"
            ),
            "only the other view's images are candidates (a B-way, CLIP-style loss): in "
            "SimCLR the negatives are all 2B-2 other views, from z1 and z2": _nt_xent_variant(
                z1, z2, t, "clip"
            ),
            "average the loss over the 2B views instead of summing it": _nt_xent_variant(
                z1, z2, t, "sum"
            ),
        }
        case = f"for B={B}, D={D}, temperature={t}"
        _diagnose(ex, out, nt_xent_loss(z1, z2, t), wrong, case)
    return _passed(f"NT-Xent matches the reference on {len(cases)} batch sizes and temperatures")


# --- lesson 05: fine-tuning --------------------------------------------------------------------


def check_lora_forward(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(x, weight, bias, lora_A, lora_B, scaling)`` -> ``x W^T + b + s (x A^T) B^T``.

    x (..., in), weight (out, in), bias (out,), lora_A (r, in), lora_B (out, r) -> (..., out):
    a frozen linear layer plus LoRA's scaled low-rank update (Hu et al. 2021).
    """
    import torch.nn.functional as F

    ex = "check_lora_forward"
    g = torch.Generator().manual_seed(501)
    cases = [((2, 5), 8, 6, 2, 2.0), ((3,), 4, 7, 1, 0.5), ((2, 3, 4), 10, 5, 3, 4.0)]
    for lead, d_in, d_out, r, s in cases:
        x, weight, bias = _randn(g, *lead, d_in), _randn(g, d_out, d_in), _randn(g, d_out)
        lora_A, lora_B = _randn(g, r, d_in), _randn(g, d_out, r)
        out = _run(ex, fn, x, weight, bias, lora_A, lora_B, s)
        out = _expect_tensor(
            ex,
            out,
            (*lead, d_out),
            "the output has the base layer's shape (..., out): x @ weight.T + bias, plus the "
            "update (x @ lora_A.T) @ lora_B.T",
        )
        base = F.linear(x, weight, bias)  # (..., out)
        update = (x @ lora_A.T) @ lora_B.T  # (..., out)
        wrong = {
            "the update is not scaled: multiply (x A^T) B^T by scaling (= alpha / r)": base
            + update,
            "you divided the update by scaling: multiply by it (scaling = alpha / r is "
            "already the factor)": base + update / s,
            "the bias is missing: the base layer is x @ weight.T + bias": x @ weight.T + s * update,
            "scaling multiplies only the low-rank update, not the frozen base layer": s
            * (base + update),
            "that is the base layer alone: add the low-rank update s * (x A^T) B^T": base,
        }
        case = f"for x {tuple(x.shape)}, r={r}, scaling={s}"
        _diagnose(ex, out, base + s * update, wrong, case)
    return _passed(f"the LoRA forward matches the reference on {len(cases)} shapes and ranks")


def _kd_variant(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, a: float, bug: str):
    """Distillation loss with one known mistake (or none, ``bug=""``)."""
    import torch.nn.functional as F

    log_ps = F.log_softmax(s / (1.0 if bug == "student_no_T" else T), dim=-1)  # (B, K)
    log_pt = F.log_softmax(t / (1.0 if bug == "teacher_no_T" else T), dim=-1)  # (B, K)
    if bug == "reversed":
        kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1).mean()  # KL(student || teacher)
    elif bug == "elementwise_mean":
        kl = (log_pt.exp() * (log_pt - log_ps)).mean()  # also divides by K
    elif bug == "cross_entropy_soft":
        kl = -(log_pt.exp() * log_ps).sum(-1).mean()  # KL plus the teacher's entropy
    else:
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    factor = 1.0 if bug == "no_T2" else (T if bug == "T1" else T**2)
    ce = F.cross_entropy(s / T if bug == "ce_soft" else s, y)
    if bug == "swapped":
        return (1 - a) * factor * kl + a * ce
    return a * factor * kl + (1 - a) * ce


def check_distillation_loss(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(student_logits, teacher_logits, labels, temperature, alpha)`` -> the scalar
    ``alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)``, the KL
    summed over classes and averaged over the batch (Hinton et al. 2015)."""
    from .finetune import distillation_loss

    ex = "check_distillation_loss"
    g = torch.Generator().manual_seed(502)
    cases = [(4, 6, 4.0, 0.5), (8, 3, 2.0, 0.9), (5, 10, 3.0, 0.3), (3, 5, 1.5, 1.0)]
    for B, K, T, a in cases:
        s, t = 3 * _randn(g, B, K), 3 * _randn(g, B, K)
        y = torch.randint(K, (B,), generator=g)
        out = _run(ex, fn, s, t, y, T, a)
        out = _expect_tensor(
            ex, out, (), "return one number (shape ()): the KL and the cross-entropy are means"
        )
        expected = distillation_loss(s, t, y, T, a)
        wrong = {
            "the soft-target term misses its factor T^2, which keeps its gradients as large as "
            "the label term's whatever the temperature": _kd_variant(s, t, y, T, a, "no_T2"),
            "multiply the soft-target term by T^2 (T squared), not T": _kd_variant(
                s, t, y, T, a, "T1"
            ),
            "the KL is the wrong way round: KL(teacher || student) = sum p_teacher * "
            "(log p_teacher - log p_student), the teacher's probabilities weight the "
            "sum": _kd_variant(s, t, y, T, a, "reversed"),
            "divide the teacher's logits by the temperature too: both distributions are "
            "softened": _kd_variant(s, t, y, T, a, "teacher_no_T"),
            "divide the student's logits by the temperature too (inside the KL term): both "
            "distributions are softened": _kd_variant(s, t, y, T, a, "student_no_T"),
            "the label term uses the softened logits: the cross-entropy with the labels is on "
            "the student's plain logits (temperature 1)": _kd_variant(s, t, y, T, a, "ce_soft"),
            "alpha weights the teacher (soft-target) term and 1 - alpha the labels, not the "
            "other way round": _kd_variant(s, t, y, T, a, "swapped"),
            "the KL is averaged over classes too: sum over the K classes, then average over "
            "the batch (F.kl_div's reduction='batchmean')": _kd_variant(
                s, t, y, T, a, "elementwise_mean"
            ),
            "that is the soft cross-entropy -sum p_t log p_s, not the KL: subtract the teacher's "
            "own entropy (sum p_t log p_t), or use F.kl_div": _kd_variant(
                s, t, y, T, a, "cross_entropy_soft"
            ),
        }
        if a == 1.0:  # only the soft term counts: the label-term mistakes look right here
            wrong = {k: v for k, v in wrong.items() if "label term" not in k}
        case = f"for B={B}, K={K}, temperature={T}, alpha={a}"
        _diagnose(ex, out, expected, wrong, case)
    return _passed(
        f"the distillation loss matches the reference on {len(cases)} temperatures and alphas"
    )


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


def check_fgsm(fn: Callable[..., torch.Tensor]) -> bool:
    """Check ``fn(model, images, labels, epsilon)`` -> ``clamp(x + eps * sign(grad_x CE), 0, 1)``,
    computed with the model in eval mode and the model's mode restored afterwards."""
    import torch.nn.functional as F

    from .finetune import eval_mode, fgsm

    ex = "check_fgsm"
    g = torch.Generator().manual_seed(503)
    models = _fgsm_models(g)
    cases = [(0, 3, 0.1), (1, 4, 0.05), (0, 2, 0.3), (1, 3, 0.02)]
    for m, B, eps in cases:
        what, model = models[m]
        was_training = model.training
        x = torch.rand(B, 3, 4, 4, generator=g)
        y = torch.randint(4, (B,), generator=g)
        expected = fgsm(model, x, y, eps)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = _run(ex, fn, model, x, y, eps)
        if model.training != was_training:
            _fail(
                ex,
                f"the model was in {'train' if was_training else 'eval'} mode before your "
                f"function and in {'train' if model.training else 'eval'} mode after",
                "put it back as you found it: `with eval_mode(model): ...` does that for you",
            )
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
        model.load_state_dict(state)
        if changed:
            _fail(
                ex,
                f"the attack changed the model ({', '.join(changed)})",
                "run the model in eval mode during the attack (`with eval_mode(model):`), so "
                "BatchNorm neither uses the batch's statistics nor updates its running ones",
            )
        out = _expect_tensor(ex, out, tuple(x.shape), "return the perturbed images, (B, C, H, W)")
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
        _diagnose(ex, out, expected, wrong, f"on {what}, epsilon={eps}")
    return _passed(f"FGSM matches the reference on {len(cases)} models and budgets")


# --- lesson 06: detection ----------------------------------------------------------------------


def _random_boxes(g: torch.Generator, n: int, size: float = 64.0) -> torch.Tensor:
    """(n, 4) valid "xyxy" boxes inside a size x size image."""
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * size * 0.3], dim=1)


def check_box_convert(fn: Callable[[torch.Tensor, str, str], torch.Tensor]) -> bool:
    """Check ``fn(boxes, in_fmt, out_fmt)`` for every pair of "xyxy", "xywh", "cxcywh"."""
    ex = "check_box_convert"
    g = torch.Generator().manual_seed(601)
    formats = ("xyxy", "xywh", "cxcywh")
    xyxy = _random_boxes(g, 7)
    for in_fmt in formats:
        boxes = box_convert(xyxy, "xyxy", in_fmt)
        for out_fmt in formats:
            out = _expect_tensor(
                ex,
                _run(ex, fn, boxes, in_fmt, out_fmt),
                (7, 4),
                "return one row of 4 numbers per box: (N, 4)",
            )
            x1, y1, x2, y2 = xyxy.unbind(-1)
            w, h = x2 - x1, y2 - y1
            wrong = {
                "the centre is the midpoint (x1 + x2) / 2, not x1 + w": torch.stack(
                    [x1 + w, y1 + h, w, h], -1
                ),
                "from (cx, cy, w, h) the corner is cx - w / 2: half the width, not all of it": (
                    torch.stack([x1 - w / 2, y1 - h / 2, x2 + w / 2, y2 + h / 2], -1)
                ),
                "(x, y, w, h) ends with the width and height, x2 - x1 and y2 - y1, not the "
                "far corner": xyxy,
                "x and y are swapped: boxes are (x, ...) first, then y": box_convert(
                    xyxy[:, [1, 0, 3, 2]], "xyxy", out_fmt
                ),
            }
            wrong = {k: v for k, v in wrong.items() if v.shape == out.shape}
            case = f"converting {in_fmt!r} -> {out_fmt!r}"
            _diagnose(ex, out, box_convert(boxes, in_fmt, out_fmt), wrong, case)
    return _passed("box_convert matches the reference for all 9 pairs of formats")


def check_box_iou(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(boxes1, boxes2)``: (N, 4), (M, 4) "xyxy" -> (N, M) pairwise IoU."""
    ex = "check_box_iou"
    g = torch.Generator().manual_seed(602)
    for n, m in [(5, 4), (1, 6), (8, 8)]:
        a, b = _random_boxes(g, n), _random_boxes(g, m)
        a[0] = b[0]  # one identical pair: IoU 1
        if n > 1:
            a[1] = torch.tensor([100.0, 100, 110, 110])  # far away from everything: IoU 0
        out = _expect_tensor(
            ex,
            _run(ex, fn, a, b),
            (n, m),
            "one IoU per pair: broadcast boxes1[:, None] against boxes2[None, :] -> (N, M)",
        )
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt = torch.max(a[:, None, :2], b[None, :, :2])
        rb = torch.min(a[:, None, 2:], b[None, :, 2:])
        raw = (rb - lt).prod(-1)  # no clamp: negative "overlaps" for disjoint boxes
        inter = (rb - lt).clamp(min=0).prod(-1)
        union = area_a[:, None] + area_b[None, :] - inter
        wrong = {
            "disjoint boxes got a non-zero overlap: clamp the intersection's width and height "
            "at 0 before multiplying, (rb - lt).clamp(min=0)": raw
            / (area_a[:, None] + area_b[None, :] - raw),
            "the union counts the intersection twice: union = area1 + area2 - intersection": inter
            / (area_a[:, None] + area_b[None, :]),
            "that is intersection / union's complement; IoU = intersection / union": inter
            / (area_a[:, None] + area_b[None, :] - 2 * inter).clamp(min=1e-9),
            "the intersection's corners: top-left is the max of the two top-lefts, "
            "bottom-right the min of the two bottom-rights": (
                (
                    torch.max(a[:, None, 2:], b[None, :, 2:])
                    - torch.min(a[:, None, :2], b[None, :, :2])
                ).prod(-1)
                / union
            ),
        }
        _diagnose(ex, out, box_iou(a, b), wrong, f"for {n} boxes against {m}")
    return _passed("box_iou matches the reference (identical, overlapping and disjoint boxes)")


def check_nms(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check ``fn(boxes, scores, iou_threshold)`` -> int64 indices kept, by decreasing score."""
    ex = "check_nms"
    g = torch.Generator().manual_seed(603)
    for n, thr in [(30, 0.5), (60, 0.3), (20, 0.7)]:
        centres = torch.rand(4, 2, generator=g) * 40  # 4 clusters of overlapping boxes
        pick = torch.randint(0, 4, (n,), generator=g)
        xy = centres[pick] + torch.randn(n, 2, generator=g) * 3
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 4], dim=1)
        scores = torch.rand(n, generator=g)
        out = _run(ex, fn, boxes, scores, thr)
        if isinstance(out, list):
            out = torch.tensor(out, dtype=torch.int64)
        if not isinstance(out, torch.Tensor) or out.ndim != 1:
            _fail(ex, "return a 1-D tensor of the kept boxes' indices", "e.g. torch.tensor(keep)")
        if out.is_floating_point() or out.dtype == torch.bool:
            _fail(
                ex,
                f"your function returned a {out.dtype} tensor; return the kept *indices* (int64)",
                "collect the index of each kept box, not a mask or the boxes themselves",
            )
        expected = nms(boxes, scores, thr)
        if torch.equal(out.long(), expected):
            continue
        case = f"for {n} boxes in 4 clusters, iou_threshold={thr}"
        if sorted(out.tolist()) == sorted(expected.tolist()):
            _fail(ex, f"right boxes, wrong order {case}", "return them by decreasing score")
        order = scores.argsort(descending=True)
        ious = box_iou(boxes, boxes)
        # known-wrong variants: compare the kept sets
        ascending = _greedy(order.flip(0), ious, thr, above=True)
        inverted = _greedy(order, ious, thr, above=False)
        no_update = [
            int(i)
            for i in order
            if not any(ious[i, j] > thr for j in order if scores[j] > scores[i])
        ]
        hints = {
            "start from the *highest* score: sort with descending=True": ascending,
            "suppress boxes whose IoU is *above* the threshold (they overlap the kept box), "
            "keep the rest": inverted,
            "a box is only suppressed by boxes you *kept*: a box already suppressed must not "
            "suppress others": no_update,
        }
        for hint, wrong in hints.items():
            if sorted(out.tolist()) == sorted(wrong):
                _fail(ex, f"wrong boxes kept {case}", hint)
        _fail(
            ex,
            f"kept {sorted(out.tolist())} {case}, expected {sorted(expected.tolist())}",
            "loop over boxes by decreasing score; keep one if no kept box overlaps it by IoU > "
            "iou_threshold",
        )
    return _passed("nms keeps the same boxes, in the same order, as the reference")


def _greedy(order: torch.Tensor, ious: torch.Tensor, thr: float, above: bool) -> list[int]:
    """Greedy NMS over ``order``, suppressing IoU above (right) or below (wrong) ``thr``."""
    keep: list[int] = []
    for i in order.tolist():
        if all((ious[i, j].item() <= thr) if above else (ious[i, j].item() >= thr) for j in keep):
            keep.append(i)
    return keep
