"""The mini-CLIP text side: a word-level tokenizer over the shapes captions and a small causal
transformer that reads a caption into one vector (CLIP's text tower, Radford et al. 2021).

::

    "a large red star at the top left" -> Tokenizer -> (B, T) ids: <sot> words <eot> <pad>...
    (B, T) -> token_embedding + positional_embedding -> causal Blocks -> ln_final
           -> the feature at each caption's <eot> position (B, width)

The vocabulary is derived from the shapes world's caption templates and word lists (plus a few
prompt words), so every generated caption encodes and an unknown word is reported, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.validate import check_heads, check_positive_int, check_tensor
from ..data.tokenizer import EOT_ID, SPECIAL_TOKENS
from ..layers.attention import causal_mask
from ..layers.blocks import LN_EPS, Block, init_linear

# --- the text tower ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TextConfig:
    """The text transformer: ``vocab_size`` ids, ``context_length`` positions (T), ``depth``
    pre-norm blocks of ``width`` channels and ``num_heads`` heads."""

    vocab_size: int
    context_length: int = 16
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "width", "depth", "num_heads"):
            check_positive_int(getattr(self, name), name)
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be > 3 (the special tokens), got {self.vocab_size}")
        if self.context_length < 3:
            raise ValueError(f"context_length must be >= 3, got {self.context_length}")
        check_heads(self.width, self.num_heads, "width", "num_heads")
        if not self.mlp_ratio > 0 or int(self.width * self.mlp_ratio) <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio!r}")


class TextTransformer(nn.Module):
    """CLIP's text encoder: token + position embeddings -> causal blocks -> ``ln_final``, read
    at each sequence's ``<eot>`` token.

    Shapes:
        forward: (B, T) int64 token ids, T <= context_length -> (B, width).
    """

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if not isinstance(cfg, TextConfig):
            raise TypeError(f"cfg must be a TextConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth)
        )
        self.ln_final = nn.LayerNorm(cfg.width, eps=LN_EPS)
        # Causal, as in GPT and CLIP's text tower: token t sees tokens 0..t only, so <eot> sums
        # up the whole caption and never the padding after it. A buffer follows .to(device);
        # not saved in the state dict, since it is not learned.
        self.register_buffer("attn_mask", causal_mask(cfg.context_length), persistent=False)
        # CLIP's init: small embeddings; linear layers trunc-normal(0.02) as in timm.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                init_linear(m, "timm")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, width) features at each row's first <eot>."""
        check_tensor(tokens, "tokens", ndim=2)
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer ids from Tokenizer.encode, got {tokens.dtype}")
        B, T = tokens.shape
        if T > self.cfg.context_length:
            raise ValueError(
                f"tokens have {T} positions, more than context_length {self.cfg.context_length}"
            )
        if tokens.min() < 0 or tokens.max() >= self.cfg.vocab_size:
            raise ValueError(f"token ids must lie in 0..{self.cfg.vocab_size - 1} (the vocabulary)")
        is_eot = tokens == EOT_ID  # (B, T)
        if not is_eot.any(dim=1).all():
            raise ValueError(
                f"every row of tokens needs an <eot> token (id {EOT_ID}), where the text feature "
                f"is read; make tokens with Tokenizer.encode"
            )
        x = self.token_embedding(tokens) + self.positional_embedding[:T]  # (B, T, width)
        mask = self.attn_mask[:T, :T]  # (T, T), True where a token may attend
        for blk in self.blocks:
            x = blk(x, attn_mask=mask)
        x = self.ln_final(x)
        eot = is_eot.int().argmax(dim=1)  # (B,), argmax returns the first <eot>
        return x[torch.arange(B, device=x.device), eot]  # (B, width)
