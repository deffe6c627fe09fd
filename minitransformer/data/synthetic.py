"""Synthetic sequence tasks for tests and demos: copy and reverse.

Each example is `[digits] SEP [answer]`; the loss is taken on the answer positions only (the
other targets are IGNORE), so a model that solves the task reaches near-zero loss.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from ..nn.loss import IGNORE_INDEX as IGNORE   # targets that no loss counts


def copy_or_reverse_batch(batch_size: int, length: int, n_symbols: int, rng: np.random.Generator,
                          reverse: bool = False):
    """Tokens 0..n_symbols-1 are symbols, n_symbols is the separator; vocab = n_symbols + 1.

    Returns x (B, 2L) and y (B, 2L) with y = IGNORE except where the answer is predicted.
    """
    sep = n_symbols
    src = rng.integers(0, n_symbols, size=(batch_size, length))
    answer = src[:, ::-1] if reverse else src
    seq = np.concatenate([src, np.full((batch_size, 1), sep), answer], axis=1)  # (B, 2L+1)
    x, y = seq[:, :-1].copy(), seq[:, 1:].copy()                               # (B, 2L)
    y[:, : length] = IGNORE                                                    # no loss on the prompt
    return x.astype(np.int64), y.astype(np.int64)
