r"""Two memory tasks for sequence models that read left to right: copying after a delay, and the
long-range retrieval of ``long_range.py`` turned around so that the question comes last.

**Copy.** $K$ random symbols, $G$ blanks, a *go* token, $K-1$ blanks; from the go token on, the
model must emit the $K$ symbols in order. Each symbol is asked for $K + G$ positions after it was
seen, so $G$ sets the distance the memory must bridge:

    s1 s2 s3 s4  _ _ _ ... _  GO  _  _  _        inputs   (K = 4, G blanks)
     .  .  .  .  . . . ... .  s1 s2 s3 s4        targets  (. = ignored)

A model that looks at the current input only (no memory) sees a blank or the go token at every
asked-for position, so the best it can do is the most frequent symbol: accuracy $1/n_{symbols}$.

**Retrieval, question last.** The tokens of a ``RetrievalTask`` example in reverse order: noise with
one value token, and [CLS] at the end, where the model must name the value. The value sits $d$ steps
before [CLS], as in the original task (which reads the answer at [CLS] with bidirectional attention);
read left to right, a recurrent model has to carry it over those $d$ steps.

Both give ``(tokens (B, N), targets (B, N))`` with ``IGNORE_INDEX`` where nothing is asked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # host side only: generated token ids

from ..nn.loss import IGNORE_INDEX
from .long_range import RetrievalTask, retrieval_batch

BLANK, GO = 0, 1


@dataclass(frozen=True)
class CopyTask:
    n_symbols: int = 8      # distinct symbols (chance, and the memoryless accuracy, 1 / n_symbols)
    length: int = 5         # K: symbols to remember per example
    delay: int = 20         # G: blanks between the last symbol and the go token

    @property
    def vocab_size(self) -> int:
        return 2 + self.n_symbols           # blank, go, symbols 2..n_symbols+1

    @property
    def seq_len(self) -> int:
        return 2 * self.length + self.delay     # K symbols, G blanks, go, K - 1 blanks

    def check(self) -> None:
        if self.n_symbols < 2 or self.length < 1 or self.delay < 0:
            raise ValueError(f"CopyTask: need n_symbols >= 2, length >= 1, delay >= 0, got "
                             f"{self.n_symbols}, {self.length}, {self.delay}")


# --8<-- [start:copy_batch]
def copy_batch(task: CopyTask, batch_size: int, rng: np.random.Generator):
    """tokens (B, 2K+G) and targets (B, 2K+G): the symbols asked for from the go token on."""
    task.check()
    B, K, G = batch_size, task.length, task.delay
    symbols = rng.integers(2, task.vocab_size, size=(B, K))                  # (B, K)
    tokens = np.full((B, task.seq_len), BLANK, dtype=np.int64)
    tokens[:, :K] = symbols
    tokens[:, K + G] = GO
    targets = np.full((B, task.seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[:, K + G:] = symbols                                             # asked K + G steps later
    return tokens, targets
# --8<-- [end:copy_batch]


def retrieval_question_last_batch(task: RetrievalTask, batch_size: int, rng: np.random.Generator):
    """The retrieval task reversed: [CLS] last, the target (the value token's id) at [CLS] only."""
    tokens, labels = retrieval_batch(task, batch_size, rng)
    tokens = np.ascontiguousarray(tokens[:, ::-1])                           # [CLS] moves to the end
    targets = np.full(tokens.shape, IGNORE_INDEX, dtype=np.int64)
    targets[:, -1] = 1 + labels                                              # name the value token
    return tokens, targets


def memoryless_accuracy(make_batch, train_batches: int, eval_batches: int, batch_size: int = 256,
                        seed: int = 0) -> float:
    """Accuracy of the best predictor that sees only the current input token: the most frequent
    target per input token, counted on training batches, scored on fresh ones."""
    rng = np.random.default_rng(seed)
    counts: dict[tuple[int, int], int] = {}
    for _ in range(train_batches):
        x, y = make_batch(batch_size, rng)
        asked = y != IGNORE_INDEX
        for pair, n in zip(*np.unique(np.stack([x[asked], y[asked]], 1), axis=0, return_counts=True)):
            counts[tuple(pair)] = counts.get(tuple(pair), 0) + int(n)
    best: dict[int, tuple[int, int]] = {}
    for (token, target), n in counts.items():
        if n > best.get(token, (-1, 0))[1]:
            best[token] = (target, n)
    hits = total = 0
    for _ in range(eval_batches):
        x, y = make_batch(batch_size, rng)
        asked = y != IGNORE_INDEX
        guess = np.array([best.get(int(t), (-1, 0))[0] for t in x[asked]])
        hits += int((guess == y[asked]).sum())
        total += int(asked.sum())
    return hits / total
