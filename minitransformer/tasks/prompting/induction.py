r"""Induction heads: copying a repeated random sequence (after Olsson et al. 2022).

A sequence is m random letters, then n letters a_1..a_n, then the same n letters again, then
random filler up to the fixed length T:

    r_1 .. r_m  a_1 .. a_n  a_1 .. a_n  z_1 .. z_f          m + 2n + f = T

Every letter is drawn independently and uniformly from the 26, and n is drawn from
[min_repeat, max_repeat] and m from [0, T - 2n], so neither the offset n - 1 back to the answer
nor the absolute position of the repeat is fixed, and the answer is no special letter of the
context (an earlier version drew all of r and a distinct, which let one layer guess "a letter seen
only once" at 0.2 and "seen once and at a plausible offset" at 0.44). A target in the second copy
is scored when the current letter a_j occurs exactly once in r and the first copy: then its earlier
occurrence, and so the answer a_{j+1} right after it, is unambiguous; the second copy's first letter
and the filler are never scored. (Training also takes the ambiguous targets of the second copy: see
`sample`.)

`head_scores` measures two attention patterns: a *previous-token head* puts weight on position
t-1; an *induction head*, at a position holding a_j of the second copy, puts weight on the position
right after a_j's first occurrence (t - n + 1), whose letter is the answer.
"""
from __future__ import annotations

import numpy as np  # host side: the generator, masks and scores

from ... import backend
from .text import Segment

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class InductionFamily:
    name = "induction"
    summary = "random letters, then a random sequence repeated: copy the repeat"
    chars = LETTERS + "\n"

    def __init__(self, seq_len: int = 40, min_repeat: int = 4, max_repeat: int = 16):
        if not 2 <= min_repeat <= max_repeat or 2 * max_repeat > seq_len:
            raise ValueError(f"InductionFamily: need 2 <= min_repeat <= max_repeat and 2 * max_repeat <= seq_len; "
                             f"got seq_len={seq_len}, repeats {min_repeat}..{max_repeat}")
        self.seq_len, self.min_repeat, self.max_repeat = seq_len, min_repeat, max_repeat
        self.max_len = seq_len

    # --8<-- [start:induction_sequence]
    def sequence(self, rng) -> tuple[str, int, int]:
        """(a sequence of seq_len letters, its repeat length n, its prefix length m)."""
        n = int(rng.integers(self.min_repeat, self.max_repeat + 1))
        m = int(rng.integers(0, self.seq_len - 2 * n + 1))
        prefix, repeat = rng.integers(0, len(LETTERS), m), rng.integers(0, len(LETTERS), n)
        filler = rng.integers(0, len(LETTERS), self.seq_len - 2 * n - m)
        ids = np.concatenate([prefix, repeat, repeat, filler])
        return "".join(LETTERS[i] for i in ids), n, m
    # --8<-- [end:induction_sequence]

    # --8<-- [start:induction_scored]
    @staticmethod
    def scored_targets(ids: np.ndarray, n: int, m: int) -> np.ndarray:
        """(T - 1,) bool over the targets ids[1:] (target t is the letter at t + 1): those in the
        second copy after its first letter whose current letter ids[t] occurs exactly once in
        ids[:m + n], the prefix and the first copy."""
        t = np.arange(len(ids) - 1)
        in_copy = (t >= m + n) & (t <= m + 2 * n - 2)
        before = ids[:m + n]
        unique = np.array([(before == ids[i]).sum() == 1 for i in t])
        return in_copy & unique
    # --8<-- [end:induction_scored]

    # --8<-- [start:induction_sample]
    def sample(self, rng, split: str):
        """Training scores the whole second copy from its second letter on. The targets whose current
        letter also occurs elsewhere before are kept there: their answer is still the letter copied
        from the first copy, and with only the unambiguous ones (about half) the models stayed on a
        plateau near the guessing strategies for 12,000 steps. Evaluation (`batch`) scores only the
        unambiguous ones."""
        text, n, m = self.sequence(rng)
        start, end = m + n + 1, m + 2 * n
        return [Segment(text[:start], False), Segment(text[start:end], True), Segment(text[end:], False)]
    # --8<-- [end:induction_sample]

    def batch(self, rng, batch_size: int):
        """(ids (B, seq_len) int64 letter ids, repeat lengths (B,), scored (B, seq_len - 1) bool:
        the targets ids[:, 1:] that `scored_targets` marks)."""
        seqs = [self.sequence(rng) for _ in range(batch_size)]
        ids = np.array([[LETTERS.index(c) for c in s] for s, _, _ in seqs], np.int64)
        n = np.array([k for _, k, _ in seqs])
        scored = np.stack([self.scored_targets(row, k, p) for row, (_, k, p) in zip(ids, seqs)])
        return ids, n, scored

    def metrics(self, model, task) -> dict:
        ids, _, scored = self.batch(np.random.default_rng(task.seed + 99), 64)
        return {"second_half_accuracy": induction_accuracy(model_next_tokens(model), ids, scored)}

    def describe(self) -> dict:
        return {"seq_len": self.seq_len, "min_repeat": self.min_repeat, "max_repeat": self.max_repeat}


def model_next_tokens(model):
    """ids (B, T) -> the model's argmax next token at every position (B, T), as host ints.
    (The tokenizer of the task lists the letters first, so a letter's id is its index.)"""
    def predict(ids):
        with model.no_grad():
            logits, _ = model.forward(backend.to_device(ids, model.device))
        return backend.to_numpy(logits).argmax(-1)
    return predict


# --8<-- [start:induction_accuracy]
def induction_accuracy(predict_next, ids: np.ndarray, scored: np.ndarray) -> float:
    """Fraction of the scored next letters that predict_next (ids (B, T-1) -> (B, T-1)) gets right."""
    predicted = predict_next(ids[:, :-1])
    return float((predicted == ids[:, 1:])[scored].mean())
# --8<-- [end:induction_accuracy]


# --8<-- [start:position_only]
def best_position_only_accuracy(ids: np.ndarray, scored: np.ndarray) -> float:
    """The best that reading positions alone can do on ids (B, T) with scored (B, T - 1): for every
    absolute position t, the one offset k (copy the letter at t - k + 1) that is right most often
    there, chosen in hindsight on this data (so slightly optimistic)."""
    right = 0
    for t in range(ids.shape[1] - 1):
        rows = scored[:, t]
        if rows.any():
            right += max(int((ids[rows, t - k + 1] == ids[rows, t + 1]).sum()) for k in range(1, t + 2))
    return right / int(scored.sum())
# --8<-- [end:position_only]


def attention_maps(model, ids: np.ndarray) -> list[np.ndarray]:
    """The attention probabilities of every block, [(B, H, T, T)] on the host (one forward that
    keeps its cache, which is where the dense kernel keeps them)."""
    was_training = model.training
    model.eval()
    try:
        model.forward(backend.to_device(ids, model.device))
        maps = [backend.to_numpy(block.attn.last_weights) for block in model.blocks]
    finally:
        model.train(was_training)
    if any(m is None for m in maps):
        raise ValueError("attention_maps needs a kernel that keeps its weights (attention='dense')")
    return maps


# --8<-- [start:head_scores]
def head_scores(weights: np.ndarray, n: np.ndarray, scored: np.ndarray) -> dict:
    """weights (B, H, T, T) of one block on the inputs ids[:, :-1], n (B,) repeat lengths, scored
    (B, T) the scored targets -> per head, the mean attention from t to t-1 ("previous_token")
    and, from the positions t whose next letter is scored, to t-n+1 ("induction")."""
    t = np.arange(1, weights.shape[2])
    previous = weights[:, :, t, t - 1].mean(axis=(0, 2))             # (H,)
    return {"previous_token": previous.tolist(), "induction": weight_back(weights, scored, n - 1).tolist()}


def weight_back(weights: np.ndarray, scored: np.ndarray, offset) -> np.ndarray:
    """(H,) per head, the mean attention from the scored queries t to the key t - offset, offset an
    int or one per sequence (B,); averaged over each sequence's scored queries that have such a
    key, then over the sequences that have any (a sequence can have none)."""
    offset = np.broadcast_to(np.asarray(offset), (weights.shape[0],))
    total, rows = np.zeros(weights.shape[1]), 0
    for b in range(weights.shape[0]):
        q = np.nonzero(scored[b])[0]
        q = q[q >= offset[b]]                                        # queries whose key t - offset exists
        if len(q):
            total += weights[b][:, q, q - offset[b]].mean(axis=-1)   # (H,)
            rows += 1
    if rows == 0:
        raise ValueError(f"weight_back: no scored query has a key {offset.min()}.. back in any of the sequences")
    return total / rows
# --8<-- [end:head_scores]
