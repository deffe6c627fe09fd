"""Causal language modelling: predict every next token of random windows of a token stream.

The data is a text and a tokenizer (or already tokenised ids): the first ``1 - val_fraction`` of
the ids train, the rest validate. The reference loss is the unigram baseline, the cross-entropy of
predicting each validation token from the training set's token frequencies.
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side data: token ids, counts and window indices

from ..data.batching import get_batch, train_val_split
from ..data.tokenizer import CharTokenizer
from .base import Task


class CausalLMTask(Task):
    """Windows x = ids[s:s+T], targets y = ids[s+1:s+T+1] for a model of context T = block_size."""

    name = "causal-lm"

    def __init__(self, train_ids, val_ids, block_size: int, tokenizer=None):
        self.train_ids = np.asarray(train_ids)
        self.val_ids = None if val_ids is None else np.asarray(val_ids)
        self.block_size, self.tokenizer = block_size, tokenizer
        self.splits = ("train",) if self.val_ids is None else ("train", "val")
        for split, ids in (("training", self.train_ids), ("validation", self.val_ids)):
            if ids is not None and len(ids) <= block_size:
                raise ValueError(f"the {split} split has {len(ids)} tokens, fewer than block_size + 1 = "
                                 f"{block_size + 1}; use a longer text or a smaller block_size")

    @classmethod
    def from_text(cls, text: str, block_size: int, val_fraction: float = 0.1, tokenizer=None):
        """Tokenise `text` (a new character tokenizer unless one is given) and split it."""
        if not text:
            raise ValueError("the training text is empty")
        tokenizer = tokenizer or CharTokenizer.from_text(text)
        train_ids, val_ids = train_val_split(tokenizer.encode(text), val_fraction)
        return cls(train_ids, val_ids, block_size, tokenizer)

    def adapt(self, config):
        if self.tokenizer is None or not hasattr(config, "vocab_size"):
            return config
        return dataclasses.replace(config, vocab_size=self.tokenizer.vocab_size)

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        ids = self.train_ids if split == "train" else self.val_ids
        return get_batch(ids, batch_size, self.block_size, rng)       # (B, T) inputs, (B, T) targets

    def check_batch(self, model, batch) -> None:
        from ..nn.checks import check_token_ids
        vocab = model.config.vocab_size
        check_token_ids(batch[0], "causal-LM inputs", vocab)             # host arrays: no device sync
        check_token_ids(batch[1], "causal-LM targets", vocab)

    def counted(self, batch) -> int:
        return batch[1].size                                           # every position is a target

    def baseline(self) -> float | None:
        """Cross-entropy of predicting each validation token from training-set frequencies."""
        if self.val_ids is None:
            return None
        vocab = int(max(self.train_ids.max(), self.val_ids.max())) + 1
        if self.tokenizer is not None:
            vocab = self.tokenizer.vocab_size
        counts = np.bincount(self.train_ids, minlength=vocab) + 1.0
        logp = np.log(counts / counts.sum())
        return float(-logp[self.val_ids].mean())

    def state(self) -> dict:
        return {"name": self.name, "block_size": self.block_size}

    def describe(self) -> str:
        val = 0 if self.val_ids is None else len(self.val_ids)
        return f"causal LM: train {len(self.train_ids):,} / val {val:,} tokens"
