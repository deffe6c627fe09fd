"""What chapter 1 and chapter 37 measure about recurrence against attention: training-step time
against sequence length, accuracy on memory tasks, and the gradient that reaches back a distance k.

Used by ``benchmarks/why_attention_measured.py``; the models are the registered ``lstm`` and
``gpt`` families, trained by the one loop (``train.fit``) on a `SparseTargetsTask`.
"""
from __future__ import annotations

import time

import numpy as np  # host-side data, accuracies and norms

from .. import backend
from ..models.model import IGNORE_INDEX
from ..models.registry import build_model
from ..tasks.base import Task
from ..train import TrainConfig, fit


class SparseTargetsTask(Task):
    """Sequences whose targets are asked at some positions only (IGNORE_INDEX elsewhere), drawn by
    make_batch(batch_size, rng) -> (tokens (B, N), targets (B, N)); e.g. ``data.copy_task``."""

    name = "sparse-targets"
    splits = ("train",)

    def __init__(self, make_batch, vocab_size: int, seq_len: int, description: str = ""):
        self.make_batch, self.vocab_size, self.seq_len = make_batch, vocab_size, seq_len
        self.description = description or self.name

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        return self.make_batch(batch_size, rng)

    def adapt(self, config):
        import dataclasses
        return dataclasses.replace(config, vocab_size=self.vocab_size, block_size=self.seq_len)

    def describe(self) -> str:
        return self.description


def train_on(kind: str, config, task: SparseTargetsTask, steps: int, batch_size: int = 32,
             lr: float = 3e-3, seed: int = 0):
    """A fresh model of family `kind` trained on `task` (AdamW, constant rate after a short warm-up,
    clipping at 1); returns (model, batch losses)."""
    model = build_model(kind, task.adapt(config), seed=seed)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, schedule="constant", warmup=20,
                      weight_decay=0.0, grad_clip=1.0, seed=seed + 1, threads=1, num_samples=0,
                      eval_interval=steps)
    result = fit(model, task, cfg, progress=False, log=lambda *a: None)
    return model, result["batch_losses"]


def target_hits(model, make_batch, batches: int = 4, batch_size: int = 256, seed: int = 10_000):
    """(hits, tokens, targets) on fresh batches: hits (B_total, N) True where an asked-for target
    was predicted (argmax), False elsewhere."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    out = []
    with model.no_grad():
        for _ in range(batches):
            x, y = make_batch(batch_size, rng)
            logits, _ = model.forward(backend.to_device(x, model.device))
            guess = backend.to_numpy(logits).argmax(-1)                      # (B, N)
            out.append(((guess == y) & (y != IGNORE_INDEX), x, y))
    model.train(was_training)
    return tuple(np.concatenate(parts) for parts in zip(*out))


# -- time ------------------------------------------------------------------------------------------
def step_seconds(models: dict, lengths, batch_size: int = 8, vocab: int = 32, rounds: int = 3,
                 seed: int = 0) -> dict:
    """Best-of-rounds CPU seconds of one forward + backward (no optimizer) for each named model at
    each sequence length. CPU time of this process (`time.process_time`), not wall time: on a machine
    shared with other jobs, a wall-clock measurement longer than a scheduler slice also counts the
    others' turns. With one BLAS thread the two agree on an idle machine. The models alternate
    inside every round. Host memory is kept for reuse as in training (`backend.tune_host_allocator`)."""
    backend.tune_host_allocator()
    rng = np.random.default_rng(seed)
    best = {(name, T): float("inf") for name in models for T in lengths}
    batches = {T: (rng.integers(0, vocab, (batch_size, T)), rng.integers(0, vocab, (batch_size, T)))
               for T in lengths}
    for r in range(rounds + 1):                                             # round 0 warms up
        for T in lengths:
            x, y = batches[T]
            for name, model in models.items():
                t0 = time.process_time()
                model.forward(x, y)
                model.backward()
                elapsed = time.process_time() - t0
                if r:
                    best[name, T] = min(best[name, T], elapsed)
    return best


# -- gradient against distance -----------------------------------------------------------------------
def gradient_by_distance(layer_forward_backward, T: int, C: int, batch_size: int = 16, seed: int = 0):
    """Mean over a batch of ||d(u . y_T) / d x_{T-k}||, k = 0..T-1, for a random unit direction u
    at the last output: how strongly the last position's gradient reaches an input k steps back.
    layer_forward_backward(x, dy) -> dx, both (B, T, C)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch_size, T, C))
    dy = np.zeros((batch_size, T, C))
    u = rng.standard_normal((batch_size, C))
    dy[:, -1] = u / np.linalg.norm(u, axis=1, keepdims=True)                 # only the last output
    dx = backend.to_numpy(layer_forward_backward(x, dy))                     # (B, T, C)
    norms = np.linalg.norm(dx, axis=2).mean(axis=0)                          # (T,), by position
    return norms[::-1]                                                       # by distance k = T-1-t
