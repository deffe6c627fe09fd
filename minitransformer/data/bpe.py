r"""GPT-2's byte-level BPE tokenizer, read from a Hugging Face folder's `vocab.json` and `merges.txt`.

Three steps turn text into token ids:

1. **Pre-tokenisation** (`gpt2_pretokenize`): the text is cut into chunks (words with their
   leading space, digit runs, punctuation runs, whitespace).
2. **Bytes as characters**: each chunk is encoded in UTF-8 and every byte is written as one
   printable character by a fixed table, `bytes_to_unicode`: the 188 printable bytes of Latin-1
   stand for themselves, the other 68 (controls, the space, ...) are shifted to U+0100 and above
   (a space becomes ``Ġ``, a newline ``Ċ``). So every string is spelled with an alphabet of 256
   symbols, and no text is ever unknown.
3. **Byte-pair merges**: the chunk starts as its symbols; of all adjacent pairs, the one listed
   earliest in `merges.txt` (the lowest *rank*) is merged, everywhere in the chunk, and again,
   until no adjacent pair is in the list. Each final piece is looked up in `vocab.json`.

Decoding joins the pieces, maps each symbol back to its byte and decodes the bytes as UTF-8
(invalid sequences, which a model can generate, become U+FFFD as in Hugging Face's
``errors="replace"``). ``decode(encode(t)) == t`` for every string.

Special tokens (``<|endoftext|>``) are cut out of the text first and map to their own ids.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np  # host side only: ids are returned as int32 arrays

from .gpt2_pretokenize import gpt2_pretokenize


# --8<-- [start:bytes_to_unicode]
@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """The byte -> character table of GPT-2: printable Latin-1 bytes map to themselves, the
    remaining 68 bytes to U+0100, U+0101, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]                # 94 + 12 + 82 = 188 bytes
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table
# --8<-- [end:bytes_to_unicode]


# --8<-- [start:bpe]
def bpe_merge(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply the merges to one chunk: merge the lowest-ranked adjacent pair (every occurrence,
    left to right) until no adjacent pair has a rank."""
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols
# --8<-- [end:bpe]


class GPT2BPETokenizer:
    """Byte-level BPE with GPT-2's pre-tokenisation.

    tokens: the vocabulary in id order (token i has id i); merges: the merge list in rank order,
    each a pair of symbols; special_tokens: tokens matched literally in the text (they must be in
    the vocabulary).
    """

    def __init__(self, tokens: list[str], merges: list[tuple[str, str]], special_tokens=("<|endoftext|>",)):
        tokens, merges = list(tokens), [tuple(m) for m in merges]
        if not tokens:
            raise ValueError("GPT2BPETokenizer: empty vocabulary")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        if len(self.stoi) != len(tokens):
            raise ValueError("GPT2BPETokenizer: the vocabulary has duplicate tokens")
        self.merges = merges
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        missing = sorted(t for t in special_tokens if t not in self.stoi)
        if missing:
            raise ValueError(f"GPT2BPETokenizer: special token(s) {missing} are not in the vocabulary")
        self.special_tokens = tuple(special_tokens)
        alphabet = bytes_to_unicode().values()
        absent = [c for c in alphabet if c not in self.stoi]
        if absent:
            raise ValueError(f"GPT2BPETokenizer: {len(absent)} of the 256 byte symbols are not in the "
                             f"vocabulary (e.g. {absent[:3]}); a byte-level vocabulary holds all of them")
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        foreign = [t for t in tokens if t not in self.special_tokens and not set(t) <= self.byte_decoder.keys()]
        if foreign:
            raise ValueError(f"GPT2BPETokenizer: {len(foreign)} token(s) are neither special tokens nor "
                             f"spelled in byte symbols, e.g. {foreign[:3]}")
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = (re.compile("(" + "|".join(re.escape(t) for t in longest_first) + ")")
                            if longest_first else None)
        self._cache: dict[str, list[int]] = {}

    # -- reading a Hugging Face folder --------------------------------------------------------------
    @classmethod
    def from_files(cls, vocab_file, merges_file, special_tokens=None) -> "GPT2BPETokenizer":
        """From `vocab.json` ({token: id}, ids 0..V-1) and `merges.txt` (one "a b" pair per line,
        after an optional "#version" line). Special tokens default to those of the vocabulary
        written like ``<|endoftext|>``."""
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        if not isinstance(vocab, dict) or not vocab:
            raise ValueError(f"{vocab_file}: expected a JSON object {{token: id}}, got {type(vocab).__name__}")
        ids = sorted(vocab.values())
        if ids != list(range(len(vocab))):
            raise ValueError(f"{vocab_file}: the ids must be 0..{len(vocab) - 1} without gaps, got "
                             f"{len(set(ids))} distinct ids from {ids[0]} to {ids[-1]}")
        tokens = [None] * len(vocab)
        for token, i in vocab.items():
            tokens[i] = token
        merges = []
        for n, line in enumerate(Path(merges_file).read_text(encoding="utf-8").split("\n"), 1):
            if not line or (n == 1 and line.startswith("#version")):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                raise ValueError(f"{merges_file}, line {n}: expected two symbols separated by one "
                                 f"space, got {line!r}")
            merges.append(tuple(pair))
        if special_tokens is None:
            special_tokens = [t for t in tokens if t.startswith("<|") and t.endswith("|>")]
        return cls(tokens, merges, special_tokens)

    def save_files(self, directory) -> list[Path]:
        """Write `vocab.json` and `merges.txt` into `directory` (the Hugging Face layout)."""
        directory = Path(directory)
        vocab = directory / "vocab.json"
        vocab.write_text(json.dumps(self.stoi, ensure_ascii=False), encoding="utf-8")
        merges = directory / "merges.txt"
        merges.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        return [vocab, merges]

    # -- encoding and decoding --------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def _encode_chunk(self, chunk: str) -> list[int]:
        if chunk not in self._cache:
            table = bytes_to_unicode()
            symbols = [table[b] for b in chunk.encode("utf-8")]
            pieces = bpe_merge(symbols, self.ranks)
            try:
                self._cache[chunk] = [self.stoi[p] for p in pieces]
            except KeyError as err:
                raise ValueError(f"GPT2BPETokenizer: merged piece {err.args[0]!r} of {chunk!r} is not in the "
                                 "vocabulary (merges.txt and vocab.json do not belong together)") from None
        return self._cache[chunk]

    # --8<-- [start:encode]
    def encode(self, text: str) -> np.ndarray:
        """int32 token ids of `text`."""
        if not isinstance(text, str):
            raise TypeError(f"GPT2BPETokenizer.encode: expected a str, got {type(text).__name__}")
        parts = self._special_re.split(text) if self._special_re else [text]
        ids = []
        for i, part in enumerate(parts):
            if i % 2:                                   # re.split puts the captured specials at odd places
                ids.append(self.stoi[part])
                continue
            for chunk in gpt2_pretokenize(part):
                ids.extend(self._encode_chunk(chunk))
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids) -> str:
        """The text of token ids: pieces joined, symbols back to bytes, bytes decoded as UTF-8."""
        data = bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"GPT2BPETokenizer.decode: token id {i} is outside 0..{self.vocab_size - 1}")
            token = self.itos[i]
            if token in self.special_tokens:
                data += token.encode("utf-8")              # written as itself, not as byte symbols
            else:
                data += bytes(self.byte_decoder[c] for c in token)
        return data.decode("utf-8", errors="replace")
    # --8<-- [end:encode]

    # -- in checkpoints -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"type": "bpe", "tokens": self.itos, "merges": [f"{a} {b}" for a, b in self.merges],
                "special_tokens": list(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2BPETokenizer":
        if d.get("type") != "bpe":
            raise ValueError(f"unknown tokenizer type {d.get('type')!r}: expected 'bpe'")
        missing = sorted({"tokens", "merges", "special_tokens"} - set(d))
        if missing:
            raise ValueError(f"a 'bpe' tokenizer description needs {missing}")
        return cls(d["tokens"], [tuple(m.split(" ")) for m in d["merges"]], d["special_tokens"])
