r"""A long-range retrieval task, and the tiny classifier that shows which attention kernels can solve it.

Each example is a sequence of $N$ tokens: a [CLS] token at position 0, noise tokens everywhere else,
and one *value* token (one of `n_classes`) hidden at a distance $d \in [d_{min}, d_{max}]$ from [CLS].
The label is the value. The model reads its answer at [CLS]:

    [CLS] n n n n n n n n n n n n n v n n n n n     label = v
      0   <---------- d ---------->

One attention layer decides what [CLS] can see. A sliding window of half-width $W < d_{min}$ never
brings the value into [CLS]'s view (the feed-forward layers are position-wise), so it stays at
chance, $1/\text{n\_classes}$; dense attention, linear attention and a Longformer whose global token is
[CLS] see every position and can learn to pick the value out by its content. With
$d_{max} \le W$ (the "near" control) the window sees it too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp


CLS = 0


@dataclass(frozen=True)
class RetrievalTask:
    seq_len: int = 64          # N, tokens per example ([CLS] included)
    n_classes: int = 8         # distinct value tokens = classes (chance accuracy 1 / n_classes)
    n_noise: int = 16          # distinct noise tokens
    min_distance: int = 17     # the value sits at a position d in [min_distance, max_distance]
    max_distance: int = 63

    @property
    def vocab_size(self) -> int:
        return 1 + self.n_classes + self.n_noise   # [CLS], values 1..n_classes, noise after

    def check(self) -> None:
        if not 1 <= self.min_distance <= self.max_distance < self.seq_len:
            raise ValueError(f"RetrievalTask: need 1 <= min_distance <= max_distance < seq_len, got "
                             f"{self.min_distance}, {self.max_distance}, {self.seq_len}")
        if self.n_classes < 2 or self.n_noise < 1:
            raise ValueError(f"RetrievalTask: need n_classes >= 2 and n_noise >= 1, got "
                             f"{self.n_classes}, {self.n_noise}")


# --8<-- [start:retrieval_batch]
def retrieval_batch(task: RetrievalTask, batch_size: int, rng: np.random.Generator):
    """tokens (B, N) int64 and labels (B,) int64 in [0, n_classes)."""
    task.check()
    B, N = batch_size, task.seq_len
    tokens = rng.integers(1 + task.n_classes, task.vocab_size, size=(B, N))   # noise everywhere
    tokens[:, 0] = CLS
    labels = rng.integers(0, task.n_classes, size=B)
    where = rng.integers(task.min_distance, task.max_distance + 1, size=B)    # distance from [CLS]
    tokens[np.arange(B), where] = 1 + labels                                   # hide the value
    return tokens.astype(np.int64), labels.astype(np.int64)
# --8<-- [end:retrieval_batch]


def RetrievalClassifier(task: RetrievalTask, d_model: int = 32, n_head: int = 2, n_layer: int = 1,
                        attention: str = "dense", attention_options: dict | None = None, seed: int = 0):
    """The SequenceClassifier (``models/classifier.py``) sized for `task`: an encoder read out at [CLS],
    no positional encoding (retrieval by content). Train it with ``benchmarking.long_range``."""
    from ..models.classifier import ClassifierConfig, SequenceClassifier
    config = ClassifierConfig(vocab_size=task.vocab_size, n_classes=task.n_classes, max_len=task.seq_len,
                              n_layer=n_layer, n_head=n_head, d_model=d_model, attention=attention,
                              attention_options=dict(attention_options or {}))
    return SequenceClassifier(config, seed=seed)
