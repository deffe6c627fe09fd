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

from .. import backend
from ..blocks import Encoder
from ..nn.embedding import Embedding
from ..nn.linear import Linear
from ..nn.loss import CrossEntropyLoss
from ..nn.module import Module
from ..optim import AdamW

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


class RetrievalClassifier(Module):
    """Embedding -> Encoder (no positional encoding: retrieval by content) -> Linear on [CLS]."""

    def __init__(self, task: RetrievalTask, d_model: int = 32, n_head: int = 2, n_layer: int = 1,
                 attention: str = "dense", attention_options: dict | None = None, seed: int = 0):
        super().__init__()
        rng = backend.host_rng(seed)
        self.task = task
        self.embed = Embedding(task.vocab_size, d_model, rng=rng, std=1.0)
        self.encoder = Encoder(n_layer, d_model, n_head, attention=attention,
                               attention_options=attention_options, max_len=task.seq_len, rng=rng)
        self.head = Linear(d_model, task.n_classes, rng=rng)
        self.shape = None

    def forward(self, tokens):
        h = self.encoder(self.embed(tokens))              # (B,N) -> (B,N,C)
        self.shape = h.shape
        return self.head(h[:, 0])                          # (B,C) -> (B,n_classes) logits at [CLS]

    def backward(self, dlogits):
        xp = backend.get_array_module(dlogits)
        dh = xp.zeros(self.shape, dtype=dlogits.dtype)     # only [CLS] feeds the head
        dh[:, 0] = self.head.backward(dlogits)             # fwd: logits = head(h[:, 0])
        self.embed.backward(self.encoder.backward(dh))


def train_retrieval(task: RetrievalTask, attention: str, attention_options: dict | None = None, *,
                    steps: int = 300, batch_size: int = 32, lr: float = 3e-3, d_model: int = 32,
                    n_head: int = 2, n_layer: int = 1, eval_batches: int = 4, seed: int = 0,
                    device: str = "cpu", split: int | None = None) -> dict:
    """Train a RetrievalClassifier with `attention` and return losses and held-out accuracy
    (with `split`, also the accuracy on values at distance <= split and > split from [CLS])."""
    model = RetrievalClassifier(task, d_model, n_head, n_layer, attention, attention_options, seed).to(device)
    loss_fn = CrossEntropyLoss()
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(steps):
        tokens, labels = retrieval_batch(task, batch_size, rng)
        logits = model(backend.to_device(tokens, device))
        loss = loss_fn(logits, backend.to_device(labels, device))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        losses.append(float(loss))
    model.eval()
    eval_rng = np.random.default_rng(10_000 + seed)       # the same held-out batches for every kernel
    hits, dists = [], []
    with model.no_grad():
        for _ in range(eval_batches):
            tokens, labels = retrieval_batch(task, 256, eval_rng)
            pred = backend.to_numpy(model(backend.to_device(tokens, device))).argmax(axis=-1)
            hits.append(pred == labels)
            dists.append(((tokens >= 1) & (tokens <= task.n_classes)).argmax(axis=1))   # value position
    hits, dists = np.concatenate(hits), np.concatenate(dists)
    tail = losses[-max(1, steps // 10):]
    result = {"attention": attention, "options": dict(attention_options or {}), "steps": steps,
              "final_loss": float(np.mean(tail)), "accuracy": float(hits.mean()), "chance": 1 / task.n_classes}
    if split is not None:
        near, far = hits[dists <= split], hits[dists > split]
        result["accuracy_near"] = float(near.mean()) if near.size else None
        result["accuracy_far"] = float(far.mean()) if far.size else None
    return result
