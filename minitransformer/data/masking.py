"""BERT's masking of its inputs for masked language modelling.

In every sequence, ``round(p * n)`` of the ``n`` maskable positions (at least one) are chosen at
random: never ``[CLS]``, ``[SEP]`` or ``[PAD]``. Of the chosen positions 80% become ``[MASK]``, 10%
a random ordinary token and 10% keep their token (so the model cannot learn that only ``[MASK]``
positions matter, and the input at pretraining looks more like the input at fine-tuning). The
target is the original token at the chosen positions and ``IGNORE_INDEX`` everywhere else, so
the loss runs over the chosen positions only.
"""
from __future__ import annotations

import numpy as np  # host side: batches are built on the host

from ..nn.functional.cross_entropy import IGNORE_INDEX
from .wordpiece import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

MASK_PROB = 0.15
NEVER_MASKED = (CLS_ID, SEP_ID, PAD_ID)


# --8<-- [start:mask_tokens]
def mask_tokens(tokens, vocab_size: int, rng, mask_prob: float = MASK_PROB):
    """(inputs, targets) for tokens (B, T): inputs with the 80/10/10 replacements, targets the
    original ids at the chosen positions and IGNORE_INDEX elsewhere."""
    if not 0 < mask_prob < 1:
        raise ValueError(f"mask_tokens: mask_prob must lie in (0, 1), got {mask_prob}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"mask_tokens: vocab_size={vocab_size} has no ordinary token to draw "
                         f"(ids 0..{len(SPECIAL_TOKENS) - 1} are special)")
    tokens = np.asarray(tokens)
    maskable = ~np.isin(tokens, NEVER_MASKED)                       # (B, T)
    n_chosen = np.where(maskable.any(axis=1),
                        np.maximum(1, np.rint(mask_prob * maskable.sum(axis=1))), 0)   # (B,)
    # a random order of each row's maskable positions: the first n_chosen of them are chosen
    keys = np.where(maskable, rng.random(tokens.shape), np.inf)     # (B, T)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)             # (B, T) place in that order
    chosen = rank < n_chosen[:, None]                               # (B, T)
    targets = np.where(chosen, tokens, IGNORE_INDEX)
    u = rng.random(tokens.shape)
    inputs = tokens.copy()
    inputs[chosen & (u < 0.8)] = MASK_ID                            # 80%: [MASK]
    random_slot = chosen & (u >= 0.8) & (u < 0.9)                   # 10%: a random ordinary token
    inputs[random_slot] = rng.integers(len(SPECIAL_TOKENS), vocab_size, int(random_slot.sum()))
    return inputs, targets                                          # 10%: left as they were
# --8<-- [end:mask_tokens]
