"""2-D sin-cos position embeddings: MAE's values and the properties lesson 02 relies on."""

import math

import pytest
import torch

from vfm_course.layers import sincos_pos_embed_1d, sincos_pos_embed_2d


def _mae_2d(embed_dim: int, grid: int) -> torch.Tensor:
    """MAE's util/pos_embed.py, transcribed loop by loop (numpy -> python floats)."""

    def one_d(dim: int, pos: list[float]) -> list[list[float]]:
        omega = [1.0 / 10000 ** (i / (dim / 2.0)) for i in range(dim // 2)]
        return [[math.sin(p * w) for w in omega] + [math.cos(p * w) for w in omega] for p in pos]

    # np.meshgrid(grid_w, grid_h): grid[0][i][j] = j (column), grid[1][i][j] = i (row)
    first = [float(j) for i in range(grid) for j in range(grid)]
    second = [float(i) for i in range(grid) for j in range(grid)]
    emb_h, emb_w = one_d(embed_dim // 2, first), one_d(embed_dim // 2, second)
    return torch.tensor([a + b for a, b in zip(emb_h, emb_w, strict=True)])


def test_matches_mae_reference() -> None:
    ours = sincos_pos_embed_2d(32, 4)
    torch.testing.assert_close(ours, _mae_2d(32, 4).float(), atol=1e-6, rtol=0)


def test_shapes_and_cls_row() -> None:
    assert sincos_pos_embed_2d(96, 8).shape == (64, 96)
    assert sincos_pos_embed_2d(96, (2, 5)).shape == (10, 96)
    with_cls = sincos_pos_embed_2d(96, 8, cls_token=True)
    assert with_cls.shape == (65, 96)
    assert torch.equal(with_cls[0], torch.zeros(96))  # the class token has no position
    assert torch.equal(with_cls[1:], sincos_pos_embed_2d(96, 8))
    assert sincos_pos_embed_1d(8, torch.arange(5.0)).shape == (5, 8)


def test_values_bounded_and_rows_distinct() -> None:
    emb = sincos_pos_embed_2d(96, 8)
    assert emb.dtype == torch.float32
    assert emb.abs().max() <= 1.0
    dist = torch.cdist(emb, emb)  # (N, N)
    off_diag = dist + torch.eye(64) * 1e9
    assert off_diag.min() > 0.1  # every patch position has its own code


def test_similarity_decays_with_distance() -> None:
    emb = sincos_pos_embed_1d(96, torch.arange(16.0))
    sim = emb @ emb.T  # (16, 16)
    # Depends only on the offset: row t against t + k is the same for every t.
    torch.testing.assert_close(sim[0, 3], sim[7, 10])
    # Falls monotonically for small offsets (larger offsets ripple a little).
    first = sim[0, :6]
    assert torch.all(first[1:] < first[:-1])
    # In 2-D: the centre patch is most similar to itself, then to its neighbours.
    emb2 = sincos_pos_embed_2d(96, 8)
    centre = 3 * 8 + 3
    sim2 = (emb2 @ emb2[centre]).reshape(8, 8)
    assert sim2.argmax() == centre
    along_row = sim2[3, 3:]
    along_col = sim2[3:, 3]
    assert torch.all(along_row[1:] < along_row[:-1])
    assert torch.all(along_col[1:] < along_col[:-1])
    assert sim2[3, 4] > sim2[4, 4] > sim2[5, 5]  # diagonal neighbours are further away


def test_bad_widths_are_explained() -> None:
    with pytest.raises(ValueError, match="embed_dim 90 is not divisible by 4"):
        sincos_pos_embed_2d(90, 8)
    with pytest.raises(ValueError, match="embed_dim 7 must be even"):
        sincos_pos_embed_1d(7, torch.arange(3.0))
    with pytest.raises(ValueError, match="grid height must be a positive integer"):
        sincos_pos_embed_2d(96, (0, 4))
