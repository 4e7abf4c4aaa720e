"""Random masking by shuffle and restore: counts, inverse permutations, mask layout, errors."""

from __future__ import annotations

import pytest
import torch

from vfm_course.layers import MaskedTokens, gather_tokens, num_kept, random_masking, unshuffle


def mae_random_masking(x, mask_ratio, noise):
    """facebookresearch/mae models_mae.py ``random_masking``, verbatim apart from the noise
    argument (valid where N * (1 - mask_ratio) is an exact integer)."""
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


def loop_random_masking(x, keep, noise):
    """Plain-Python reference: per sample, sort token indices by noise and keep the first."""
    B, N, _ = x.shape
    kept, mask, restore = [], torch.ones(B, N), torch.empty(B, N, dtype=torch.long)
    for b in range(B):
        order = sorted(range(N), key=lambda i, b=b: (noise[b, i].item(), i))
        kept.append(torch.stack([x[b, i] for i in order[:keep]]))
        for i in order[:keep]:
            mask[b, i] = 0
        for rank, i in enumerate(order):
            restore[b, i] = rank
    return torch.stack(kept), mask, restore


@pytest.mark.parametrize(
    "n, ratio, expected",
    [(64, 0.75, 16), (64, 0.0, 64), (10, 0.9, 1), (100, 0.29, 71), (100, 0.58, 42),
     (10, 0.75, 3), (16, 0.5, 8), (49, 0.75, 13), (1, 0.0, 1), (3, 0.5, 2)],
)  # fmt: skip
def test_num_kept_exact_counts(n: int, ratio: float, expected: int) -> None:
    assert num_kept(n, ratio) == expected


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5, float("nan")])
def test_num_kept_rejects_ratio_out_of_range(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        num_kept(10, ratio)


def test_num_kept_rejects_bad_types_and_keeping_nothing() -> None:
    with pytest.raises(TypeError, match="mask_ratio must be a float"):
        num_kept(10, "0.75")
    with pytest.raises(TypeError, match="mask_ratio must be a float"):
        num_kept(10, True)
    with pytest.raises(ValueError, match="positive integer"):
        num_kept(0, 0.5)
    with pytest.raises(ValueError, match="at least one must stay visible"):
        num_kept(10**12, 1 - 1e-13)


@pytest.mark.parametrize("B, N, D, ratio", [(3, 16, 5, 0.75), (2, 10, 4, 0.9), (4, 7, 3, 0.0)])
def test_matches_official_mae_and_loop_reference(B: int, N: int, D: int, ratio: float) -> None:
    g = torch.Generator().manual_seed(N)
    x, noise = torch.randn(B, N, D, generator=g), torch.rand(B, N, generator=g)
    out = random_masking(x, ratio, noise)
    assert isinstance(out, MaskedTokens)
    keep = num_kept(N, ratio)
    kept, mask, restore = loop_random_masking(x, keep, noise)
    torch.testing.assert_close(out.kept, kept, rtol=0, atol=0)
    torch.testing.assert_close(out.mask, mask, rtol=0, atol=0)
    torch.testing.assert_close(out.ids_restore, restore, rtol=0, atol=0)
    if ratio != 0.9:  # MAE's int(N * (1 - 0.9)) keeps 0 of 10 tokens (the float bug num_kept fixes)
        ref = mae_random_masking(x, ratio, noise)
        for ours, theirs in zip(out[:3], ref, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_invariants_on_random_noise() -> None:
    g = torch.Generator().manual_seed(0)
    B, N, D, ratio = 6, 64, 8, 0.75
    x = torch.randn(B, N, D, generator=g)
    out = random_masking(x, ratio, generator=g)
    keep = num_kept(N, ratio)
    assert out.kept.shape == (B, keep, D) and out.ids_keep.shape == (B, keep)
    assert out.mask.shape == (B, N) and out.ids_restore.shape == (B, N)
    assert out.mask.dtype == torch.float32 and out.ids_restore.dtype == torch.long
    # Exactly N - N_keep tokens removed per sample, and the mask is 0 exactly at ids_keep.
    assert (out.mask.sum(1) == N - keep).all()
    expected_mask = torch.ones(B, N).scatter(1, out.ids_keep, 0.0)
    assert torch.equal(out.mask, expected_mask)
    # Kept tokens are x at ids_keep, in that order.
    for b in range(B):
        assert torch.equal(out.kept[b], x[b, out.ids_keep[b]])
    # ids_restore inverts the shuffle: the full shuffled sequence comes back in original order.
    ids_shuffle = torch.argsort(out.ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :keep], out.ids_keep)
    shuffled = gather_tokens(x, ids_shuffle)
    assert torch.equal(unshuffle(shuffled, out.ids_restore), x)
    assert torch.equal(torch.gather(ids_shuffle, 1, out.ids_restore), torch.arange(N).expand(B, N))
    # Every sample draws its own subset.
    assert len({tuple(row.tolist()) for row in out.mask}) == B


def test_kept_tokens_follow_increasing_noise() -> None:
    B, N, D = 2, 8, 3
    x = torch.arange(B * N * D, dtype=torch.float32).reshape(B, N, D)
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8, 0.0, 0.7, 0.6], [0.0] * 8])
    out = random_masking(x, 0.5, noise)
    assert out.ids_keep.tolist() == [[5, 1, 3, 2], [0, 1, 2, 3]]  # ties: by position
    assert torch.equal(out.kept[0], x[0, [5, 1, 3, 2]])
    assert out.mask.tolist() == [[1, 0, 0, 0, 1, 0, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]]


def test_same_noise_same_result_and_generator_determinism() -> None:
    x = torch.randn(3, 16, 4, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(2))
    a, b = random_masking(x, 0.75, noise), random_masking(x, 0.75, noise.clone())
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)
    c = random_masking(x, 0.75, generator=torch.Generator().manual_seed(5))
    d = random_masking(x, 0.75, generator=torch.Generator().manual_seed(5))
    e = random_masking(x, 0.75, generator=torch.Generator().manual_seed(6))
    for u, v in zip(c, d, strict=True):
        assert torch.equal(u, v)
    assert not torch.equal(c.mask, e.mask)
    # The generator's noise is torch.rand(B, N): passing it explicitly gives the same mask.
    f = random_masking(x, 0.75, torch.rand(3, 16, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(c.ids_restore, f.ids_restore)


def test_gradients_flow_to_kept_tokens_only() -> None:
    x = torch.randn(2, 10, 3, requires_grad=True)
    out = random_masking(x, 0.6, torch.rand(2, 10, generator=torch.Generator().manual_seed(0)))
    out.kept.sum().backward()
    touched = (x.grad != 0).all(-1).float()  # (B, N)
    assert torch.equal(touched, 1 - out.mask)


def test_errors_are_learner_worded() -> None:
    x = torch.randn(2, 8, 4)
    with pytest.raises(ValueError, match="x must have 3 dimensions"):
        random_masking(torch.randn(2, 8), 0.5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        random_masking([[1.0]], 0.5)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 8\)"):
        random_masking(x, 0.5, torch.rand(2, 7))
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\)"):
        random_masking(x, 1.0)
    with pytest.raises(TypeError, match="long"):
        gather_tokens(x, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch size"):
        gather_tokens(x, torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="append the mask tokens"):
        unshuffle(x[:, :4], torch.zeros(2, 8, dtype=torch.long))
