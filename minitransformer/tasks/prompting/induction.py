r"""Induction heads: copying a repeated random sequence (after Olsson et al. 2022).

A sequence is m random letters, then n letters a_1..a_n, then the same n letters again, then
random filler up to the fixed length T:

    r_1 .. r_m  a_1 .. a_n  a_1 .. a_n  z_1 .. z_f          m + 2n + f = T

n is drawn from [min_repeat, max_repeat] and m from [0, T - 2n], independently, so neither the
offset n - 1 back to the answer nor the absolute position of the repeat is fixed. All of r and the
first copy of a are distinct letters, so once the second copy has started the next letter is
determined: after a_j comes a_{j+1}. The model is trained and scored on the second copy from its
second letter on; the filler is never scored.

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

    def __init__(self, seq_len: int = 20, min_repeat: int = 4, max_repeat: int = 8):
        if not 2 <= min_repeat <= max_repeat or 2 * max_repeat > seq_len or seq_len - min_repeat > len(LETTERS):
            raise ValueError(f"InductionFamily: need 2 <= min_repeat <= max_repeat, 2 * max_repeat <= seq_len "
                             f"and seq_len - min_repeat <= {len(LETTERS)} distinct letters; got seq_len="
                             f"{seq_len}, repeats {min_repeat}..{max_repeat}")
        self.seq_len, self.min_repeat, self.max_repeat = seq_len, min_repeat, max_repeat
        self.max_len = seq_len

    # --8<-- [start:induction_sequence]
    def sequence(self, rng) -> tuple[str, int, int]:
        """(a sequence of seq_len letters, its repeat length n, its prefix length m)."""
        n = int(rng.integers(self.min_repeat, self.max_repeat + 1))
        m = int(rng.integers(0, self.seq_len - 2 * n + 1))
        letters = rng.permutation(len(LETTERS))[:m + n]          # prefix and first copy: distinct
        prefix, repeat = letters[:m], letters[m:]
        filler = rng.integers(0, len(LETTERS), self.seq_len - 2 * n - m)
        ids = np.concatenate([prefix, repeat, repeat, filler])
        return "".join(LETTERS[i] for i in ids), n, m
    # --8<-- [end:induction_sequence]

    def sample(self, rng, split: str):
        """Training scores the second copy from its second letter on, the only predictable part."""
        text, n, m = self.sequence(rng)
        start, end = m + n + 1, m + 2 * n
        return [Segment(text[:start], False), Segment(text[start:end], True), Segment(text[end:], False)]

    def batch(self, rng, batch_size: int):
        """(ids (B, seq_len) int64 letter ids, repeat lengths (B,), scored (B, seq_len - 1) bool:
        the targets ids[:, 1:] that lie in the second copy after its first letter)."""
        seqs = [self.sequence(rng) for _ in range(batch_size)]
        ids = np.array([[LETTERS.index(c) for c in s] for s, _, _ in seqs], np.int64)
        n = np.array([k for _, k, _ in seqs])
        m = np.array([p for _, _, p in seqs])
        t = np.arange(self.seq_len - 1)                              # target t is the letter at t + 1
        scored = (t[None, :] >= (m + n)[:, None]) & (t[None, :] <= (m + 2 * n - 2)[:, None])
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
    B, H, T, _ = weights.shape
    t = np.arange(1, T)
    previous = weights[:, :, t, t - 1].mean(axis=(0, 2))             # (H,)
    induction = np.zeros(H)
    for b in range(B):
        q = np.nonzero(scored[b])[0]                                 # second copy: a_1 .. a_{n-1}
        induction += weights[b][:, q, q - n[b] + 1].mean(axis=-1)    # (H,)
    return {"previous_token": previous.tolist(), "induction": (induction / B).tolist()}
# --8<-- [end:head_scores]
