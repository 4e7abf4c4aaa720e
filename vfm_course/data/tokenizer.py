"""Mini-CLIP's word-level tokenizer over the shapes world's caption vocabulary.

A caption is split into lower-case words; every word of every caption template (and the
prompt words zero-shot classification uses) is in the vocabulary, so no shapes-world text is
ever out of vocabulary. Sequences are ``[SOS] words... [EOS]`` padded to a fixed length;
shapes: texts -> token ids (B, T) int64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.validate import check_positive_int, check_tensor
from .shapes import CAPTION_TEMPLATES, COLOUR_NAMES, SHAPE_CLASSES, SIZE_WORDS, position_phrase

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
