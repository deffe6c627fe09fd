"""Sequence to sequence on a synthetic task: reverse a string of digits.

Sources have random lengths between ``min_len`` and ``max_len``, padded with PAD. The decoder reads
BOS followed by the reversed string shifted right (teacher forcing) and predicts the reversed
string; padded target positions are IGNORE_INDEX, so they count in no loss. The metric is the
exact-match accuracy of greedy decoding on a fixed validation set.
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side synthetic data

from ..models.model import IGNORE_INDEX
from .base import Task

PAD, BOS, FIRST_SYMBOL = 0, 1, 2


def reverse_batch(batch_size: int, min_len: int, max_len: int, n_symbols: int, rng):
    """(src (B, S), tgt_in (B, S), tgt_out (B, S)) host int64 arrays with S = max_len."""
    lengths = rng.integers(min_len, max_len + 1, size=batch_size)
    symbols = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + n_symbols, size=(batch_size, max_len))
    real = np.arange(max_len)[None, :] < lengths[:, None]                 # (B, S) True on the string
    src = np.where(real, symbols, PAD)
    # reversed: position t of the answer holds source position length - 1 - t
    index = np.clip(lengths[:, None] - 1 - np.arange(max_len)[None, :], 0, max_len - 1)
    answer = np.take_along_axis(src, index, axis=1)                        # (B, S)
    tgt_out = np.where(real, answer, IGNORE_INDEX)
    tgt_in = np.concatenate([np.full((batch_size, 1), BOS), np.where(real, answer, PAD)[:, :-1]], axis=1)
    return src.astype(np.int64), tgt_in.astype(np.int64), tgt_out.astype(np.int64)


# --8<-- [start:reverse_task]
class ReverseTask(Task):
    """Reverse digit strings; validation batches are drawn from a fixed generator."""

    name = "seq2seq-reverse"

    def __init__(self, n_symbols: int = 10, min_len: int = 3, max_len: int = 8, val_size: int = 256,
                 seed: int = 0):
        if not 1 <= min_len <= max_len:
            raise ValueError(f"ReverseTask: expected 1 <= min_len <= max_len, got {min_len} and {max_len}")
        if n_symbols < 2:
            raise ValueError(f"ReverseTask: n_symbols must be >= 2, got {n_symbols}")
        self.n_symbols, self.min_len, self.max_len = n_symbols, min_len, max_len
        self.val_set = reverse_batch(val_size, min_len, max_len, n_symbols, np.random.default_rng(seed + 1))

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.n_symbols

    def adapt(self, config):
        return dataclasses.replace(config, src_vocab_size=self.vocab_size, tgt_vocab_size=self.vocab_size,
                                   max_src_len=self.max_len, max_tgt_len=self.max_len, pad_id=PAD)

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        return reverse_batch(batch_size, self.min_len, self.max_len, self.n_symbols, rng)
# --8<-- [end:reverse_task]

    def metrics(self, model) -> dict:
        """Exact-match accuracy of greedy decoding on the validation set (every real position right)."""
        from .. import backend
        src, _, tgt_out = self.val_set
        out = backend.to_numpy(model.greedy_decode(backend.to_device(src, model.device), BOS, self.max_len))
        real = tgt_out != IGNORE_INDEX
        correct = (out[:, :self.max_len] == tgt_out) | ~real
        return {"exact_match": float(correct.all(axis=1).mean())}

    def baseline(self) -> float:
        """Cross-entropy of guessing a uniform symbol: log(n_symbols)."""
        return float(np.log(self.n_symbols))

    def state(self) -> dict:
        return {"name": self.name, "n_symbols": self.n_symbols, "min_len": self.min_len,
                "max_len": self.max_len}

    def describe(self) -> str:
        return (f"reverse strings of {self.min_len}-{self.max_len} symbols from {self.n_symbols} "
                f"(vocabulary {self.vocab_size} with PAD and BOS)")
