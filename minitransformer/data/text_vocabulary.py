"""A character vocabulary for text-to-text models, with PAD, EOS, UNK and T5-style sentinels.

T5 reads and writes text through one vocabulary. Here it is character level: the printable ASCII
characters of the built-in corpus, plus

* ``PAD`` (0): padding, and the token the decoder starts from;
* ``EOS`` (1): the end of every input and every target;
* ``UNK`` (2): any other character;
* sentinels ``<extra_id_0>``, ``<extra_id_1>``, ... counting down from the top of the vocabulary
  (sentinel k has id V - 1 - k), each marking one dropped span in span corruption.

Characters keep every task's answer exact at the level of single letters (reverse, sort, case), at
the price of longer sequences than a WordPiece vocabulary would give.
"""
from __future__ import annotations

import numpy as np  # host-side token ids

PAD, EOS, UNK = 0, 1, 2
CHARS = "".join(chr(c) for c in range(32, 127))          # printable ASCII, space to tilde


class TextVocabulary:
    """Characters -> ids and back; ``sentinel(k)`` is the id of ``<extra_id_k>``."""

    def __init__(self, n_sentinels: int = 16, chars: str = CHARS):
        if isinstance(n_sentinels, bool) or not isinstance(n_sentinels, int) or n_sentinels < 1:
            raise ValueError(f"TextVocabulary: n_sentinels must be a positive int, got {n_sentinels!r}")
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError("TextVocabulary: chars must be a non-empty string without repeats")
        self.chars, self.n_sentinels = chars, n_sentinels
        self.first_char = 3
        self._index = {ch: self.first_char + i for i, ch in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return self.first_char + len(self.chars) + self.n_sentinels

    def sentinel(self, k: int) -> int:
        """The id of sentinel k, counted down from the top of the vocabulary."""
        if not 0 <= k < self.n_sentinels:
            raise ValueError(f"sentinel {k} does not exist: the vocabulary has {self.n_sentinels} sentinels "
                             f"(0..{self.n_sentinels - 1}); build it with more")
        return self.vocab_size - 1 - k

    def is_sentinel(self, ids):
        return np.asarray(ids) >= self.vocab_size - self.n_sentinels

    def encode(self, text: str, eos: bool = False) -> np.ndarray:
        """int64 ids of the characters of text (UNK for characters outside the vocabulary), + EOS."""
        ids = [self._index.get(ch, UNK) for ch in text] + ([EOS] if eos else [])
        return np.array(ids, dtype=np.int64)

    def decode(self, ids) -> str:
        """Text of the ids up to the first EOS; PAD skipped, sentinels written <extra_id_k>."""
        out = []
        top = self.vocab_size - 1
        for i in (int(x) for x in np.asarray(ids).reshape(-1)):
            if i == EOS:
                break
            if i == PAD:
                continue
            if i > top or i < 0:
                raise ValueError(f"TextVocabulary.decode: id {i} is outside [0, {self.vocab_size})")
            if i >= self.vocab_size - self.n_sentinels:
                out.append(f"<extra_id_{top - i}>")
            elif i == UNK:
                out.append("?")
            else:
                out.append(self.chars[i - self.first_char])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"type": "text-vocabulary", "chars": self.chars, "n_sentinels": self.n_sentinels}
