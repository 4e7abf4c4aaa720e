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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .attention import causal_mask
from .blocks import LN_EPS, Block
from .shapes import (
    CAPTION_TEMPLATES,
    COLOUR_NAMES,
    SHAPE_CLASSES,
    SIZE_WORDS,
    position_phrase,
)
from .validate import check_positive_int, check_tensor

# --- words -------------------------------------------------------------------------------------

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<sot>", "<eot>")
PAD_ID, SOT_ID, EOT_ID = 0, 1, 2
# Words that zero-shot prompts put around a class name; most never occur in a caption.
PROMPT_WORDS: tuple[str, ...] = (
    *("photo", "picture", "image", "drawing", "of", "a", "an", "the", "this", "is", "object"),
    *("shape", "thing", "colour", "color", "small", "large", "big", "little", "with", "one"),
)


def _caption_words() -> list[str]:
    """Every word a shapes caption can contain, read off the shapes module's own tables."""
    template_words = [w for t in CAPTION_TEMPLATES for w in t.split() if not w.startswith("{")]
    # One point in each of the 3 x 3 position bands (split at 40% and 60% of the side).
    phrases = [position_phrase(x, y, 10) for y in (1, 5, 9) for x in (1, 5, 9)]
    where = [w for p in phrases for w in p.split()]
    return [*template_words, *SIZE_WORDS, *COLOUR_NAMES, *SHAPE_CLASSES, *where]


def build_vocab() -> tuple[str, ...]:
    """The mini-CLIP vocabulary: "<pad>" (id 0), "<sot>", "<eot>", the caption words, then the
    prompt words; repeats dropped, first-seen order (the same on every call)."""
    return tuple(dict.fromkeys([*SPECIAL_TOKENS, *_caption_words(), *PROMPT_WORDS]))


class Tokenizer:
    """Word-level tokenizer: lower-case, split on spaces, ``<sot> words <eot>`` then ``<pad>``.

    CLIP uses byte-pair encoding over 49,152 tokens; a world with a few dozen words needs only
    a lookup table. ``encode`` gives (B, T) int64 ids with T = ``context_length``.
    """

    def __init__(self, vocab: Sequence[str] | None = None, context_length: int = 16) -> None:
        vocab = build_vocab() if vocab is None else tuple(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocab must not contain a word twice")
        check_positive_int(context_length, "context_length")
        if context_length < 3:
            raise ValueError(
                f"context_length must be >= 3 (<sot>, a word, <eot>), got {context_length}"
            )
        self.vocab = vocab
        self.context_length = context_length
        self.word_to_id = {w: i for i, w in enumerate(vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    def _ids(self, text: object) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        words = text.lower().split()
        for w in words:
            if w in SPECIAL_TOKENS:
                raise ValueError(f"{w!r} is added by the tokenizer itself; write plain words only")
            if w not in self.word_to_id:
                known = len(self.vocab) - len(SPECIAL_TOKENS)
                raise ValueError(
                    f"the word {w!r} is not in the mini-CLIP vocabulary (it only knows the "
                    f"{known} words of the shapes captions and prompts, e.g. "
                    f"{', '.join(SHAPE_CLASSES[:3])}, {COLOUR_NAMES[0]}, {SIZE_WORDS[-1]}, photo)"
                )
        most = self.context_length - 2
        if len(words) > most:
            raise ValueError(
                f"the text {text!r} has {len(words)} words, but at most {most} fit "
                f"(context_length {self.context_length} minus <sot> and <eot>); shorten it"
            )
        return [self.word_to_id[w] for w in words]

    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """One text or a list of B texts -> int64 (B, T) token ids (B = 1 for one string)."""
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError("texts must be a string or a non-empty list of strings")
        rows = []
        for text in texts:
            ids = [SOT_ID, *self._ids(text), EOT_ID]
            rows.append(ids + [PAD_ID] * (self.context_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)  # (B, T)

    def decode(self, ids: torch.Tensor) -> str | list[str]:
        """(T,) ids -> the text; (B, T) -> a list of B texts. Stops at the first <eot>."""
        check_tensor(ids, "ids", ndim=(1, 2))
        if ids.is_floating_point():
            raise TypeError(f"ids must be integer token ids, got {ids.dtype}")
        if ids.ndim == 2:
            return [self.decode(row) for row in ids]
        words = []
        for i in ids.tolist():
            if not 0 <= i < len(self.vocab):
                raise ValueError(
                    f"token id {i} is outside the vocabulary (0..{len(self.vocab) - 1})"
                )
            if i == EOT_ID:
                break
            if i not in (PAD_ID, SOT_ID):
                words.append(self.vocab[i])
        return " ".join(words)


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
        if self.width % self.num_heads != 0:
            raise ValueError(
                f"width {self.width} is not divisible by num_heads {self.num_heads}: each head "
                f"gets width // num_heads channels"
            )
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
        # CLIP's init: small embeddings; linear layers as in the ViT (trunc-normal 0.02).
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

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
