"""Lesson 01's exercises: attention, heads, online softmax."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...eval.profiling import peak_memory
from ...layers.attention import chunked_attention, scaled_dot_product_attention
from ...layers.multihead import merge_heads, split_heads
from .checking import call_learner, diagnose, expect_tensor, fail, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    rand_expr,
    randn_expr,
)

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
        q, k, v = randn(g, B, h, L, d), randn(g, B, h, S, d), randn(g, B, h, S, dv)
        out = expect_tensor(
            ex,
            call_learner(ex, fn, q, k, v),
            (B, h, L, dv),
            "the output is weights @ v: (B, h, L, dv)",
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
        diagnose(ex, out, scaled_dot_product_attention(q, k, v), wrong, case)
        n_cases += 1

    B, h, L, S, d = 2, 2, 6, 6, 8
    q, k, v = randn(g, B, h, L, d), randn(g, B, h, S, d), randn(g, B, h, S, d)
    padding = (torch.arange(S) < torch.tensor([6, 3])[:, None])[:, None, None, :]  # (B, 1, 1, S)
    causal = torch.ones(L, S, dtype=torch.bool).tril()  # (L, S)
    for name, mask in [("a padding mask (B, 1, 1, S)", padding), ("a causal mask (L, S)", causal)]:
        out = expect_tensor(ex, call_learner(ex, fn, q, k, v, mask), (B, h, L, d))
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
        diagnose(ex, out, scaled_dot_product_attention(q, k, v, mask), wrong, case)
        n_cases += 1
    return passed(f"attention matches the reference on {n_cases} cases (with and without masks)")


def check_split_merge_heads(
    split_fn: Callable[[torch.Tensor, int], torch.Tensor],
    merge_fn: Callable[[torch.Tensor], torch.Tensor],
) -> bool:
    """Check ``split_fn(x, num_heads)``: (B, L, D) -> (B, h, L, d) and ``merge_fn`` back."""
    ex = "check_split_merge_heads"
    g = torch.Generator().manual_seed(202)
    for B, L, D, h in [(2, 5, 12, 3), (1, 7, 8, 1), (3, 4, 6, 6)]:
        x = randn(g, B, L, D)
        d = D // h
        expected = split_heads(x, h)  # (B, h, L, d)
        out = expect_tensor(
            ex,
            call_learner(ex, split_fn, x, h),
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
        diagnose(ex, out, expected, wrong, f"from split_fn for x {tuple(x.shape)}, {h} heads")

        merged = expect_tensor(
            ex,
            call_learner(ex, merge_fn, expected.contiguous()),  # as attention outputs are
            (B, L, D),
            "merge (B, h, L, d) back to (B, L, D) with D = h * d",
        )
        wrong = {
            "transpose(1, 2) back to (B, L, h, d) before reshaping to (B, L, D)": (
                expected.reshape(B, L, D)
            ),
        }
        diagnose(ex, merged, x, wrong, f"from merge_fn for a (B, h, L, d) = {(B, h, L, d)} input")
    return passed("split_heads and merge_heads match the reference and invert each other")


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
        q, k, v = 2 * randn(g, B, h, L, d), 2 * randn(g, B, h, S, d), randn(g, B, h, S, dv)
        out = expect_tensor(ex, call_learner(ex, fn, q, k, v, chunk), (B, h, L, dv))
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
        diagnose(ex, out, scaled_dot_product_attention(q, k, v), wrong, case)

    # Memory: a chunked answer must stay well below the explicit version's (L, S) matrices.
    q, k, v = (randn(g, 2, 2, 512, 32) for _ in range(3))
    with torch.no_grad():
        explicit = peak_memory(scaled_dot_product_attention, q, k, v)
        yours = peak_memory(lambda *a: call_learner(ex, fn, *a, 32), q, k, v)
    if yours > 0.5 * explicit:
        fail(
            ex,
            f"correct values, but your peak memory ({yours / 1e6:.1f} MB) is close to the explicit "
            f"version's ({explicit / 1e6:.1f} MB) at L = S = 512, chunk_size = 32",
            "compute the scores one chunk at a time (k[..., start:end, :]) and never build or "
            "concatenate the full (L, S) score matrix",
        )
    return passed(
        f"online-softmax attention matches the reference on {len(cases)} chunk sizes "
        "and peaks at less than half of the explicit version's memory"
    )


# ----------------------------------------------------------------------------- references
# The package's implementations, wrapped to the exact signatures the notebooks ask for.


def attention_reference(q, k, v, mask=None):
    """(B, h, L, d), (B, h, S, d), (B, h, S, dv), bool mask (True = may attend) -> (B, h, L, dv)."""
    return scaled_dot_product_attention(q, k, v, attn_mask=mask)


def online_attention_reference(q, k, v, chunk_size=64):
    """Attention over key/value chunks with an online softmax -> (B, h, L, dv)."""
    return chunked_attention(q, k, v, chunk_size=chunk_size)


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "01_attention_from_scratch"
# What a graded attention answer may not call: the library's and the course's attention.
ATTENTION_LIBRARY = (
    "scaled_dot_product_attention",
    "MultiheadAttention",
    "multi_head_attention_forward",
    "Attention",
    "chunked_attention",
    "Transformer",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
)
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="attention",
        notebook=NOTEBOOK,
        functions=("my_attention",),
        cells=("ex1-solution",),
        checker=check_attention,
        references=(attention_reference,),
        hidden=(
            HiddenCase(
                "no mask",
                f"my_attention({randn_expr(2, 3, 5, 8)}, {randn_expr(2, 3, 7, 8)}, "
                f"{randn_expr(2, 3, 7, 4)})",
            ),
            HiddenCase(
                "boolean mask",
                f"my_attention({randn_expr(2, 2, 6, 4)}, {randn_expr(2, 2, 6, 4)}, "
                f"{randn_expr(2, 2, 6, 5)}, "
                f"mask=({rand_expr(2, 1, 6, 6)} > 0.5) | _torch.eye(6, dtype=_torch.bool))",
            ),
        ),
        seed=7101,
        forbidden=ATTENTION_LIBRARY,
    ),
    Exercise(
        name="split_merge_heads",
        notebook=NOTEBOOK,
        functions=("my_split_heads", "my_merge_heads"),
        cells=("ex2-split", "ex2-merge"),
        checker=check_split_merge_heads,
        references=(split_heads, merge_heads),
        hidden=(
            HiddenCase("split", f"my_split_heads({randn_expr(2, 5, 12)}, 3)"),
            HiddenCase("merge", f"my_merge_heads({randn_expr(2, 4, 5, 6)})"),
            HiddenCase("round trip", f"my_merge_heads(my_split_heads({randn_expr(3, 4, 8)}, 2))"),
        ),
        seed=7102,
        forbidden=("rearrange", "MultiheadAttention", "Attention"),
    ),
    Exercise(
        name="online_softmax_attention",
        notebook=NOTEBOOK,
        functions=("my_online_attention",),
        cells=("ex3-solution",),
        checker=check_online_softmax_attention,
        references=(online_attention_reference,),
        hidden=(
            HiddenCase(
                "chunks that do not divide S",
                f"my_online_attention(2 * {randn_expr(2, 2, 6, 8)}, 2 * {randn_expr(2, 2, 11, 8)}, "
                f"{randn_expr(2, 2, 11, 3)}, chunk_size=4)",
            ),
            HiddenCase(
                "one chunk",
                f"my_online_attention({randn_expr(1, 3, 5, 4)}, {randn_expr(1, 3, 9, 4)}, "
                f"{randn_expr(1, 3, 9, 4)}, chunk_size=16)",
            ),
        ),
        seed=7103,
        forbidden=ATTENTION_LIBRARY,
    ),
)
