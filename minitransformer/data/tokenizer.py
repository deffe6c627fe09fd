"""A character-level tokenizer: every distinct character of the corpus is one token."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp


class CharTokenizer:
    """Maps characters to ids 0..V-1 in sorted order (so the same text gives the same vocabulary)."""

    def __init__(self, chars):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the character list has duplicates")
        if not chars:
            raise ValueError("CharTokenizer: empty vocabulary (is the corpus empty?)")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of `text`; an unknown character raises ValueError naming it."""
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the tokenizer's vocabulary "
                             f"of {self.vocab_size} characters") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("type") != "char":
            raise ValueError(f"unknown tokenizer type {d.get('type')!r}: expected 'char'")
        return cls(list(d["chars"]))


def tokenizer_from_dict(d: dict):
    """The tokenizer that a `to_dict()` describes, chosen by its "type" ("char", "wordpiece" or "bpe")."""
    from .bpe import GPT2BPETokenizer
    from .wordpiece import WordPieceTokenizer

    kinds = {"char": CharTokenizer, "wordpiece": WordPieceTokenizer, "bpe": GPT2BPETokenizer}
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in kinds:
        raise ValueError(f"unknown tokenizer type {kind!r}: expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(d)
