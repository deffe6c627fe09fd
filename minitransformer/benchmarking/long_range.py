"""Training the retrieval classifier of ``data/long_range.py`` with the one training loop, and its
held-out accuracy (overall, and near to / far from [CLS])."""
from __future__ import annotations

from functools import partial

import numpy as np  # host-side accuracy

from ..data.long_range import RetrievalClassifier, RetrievalTask, retrieval_batch
from ..tasks.classification import ClassificationTask
from ..train import TrainConfig, fit


def train_retrieval(task: RetrievalTask, attention: str, attention_options: dict | None = None, *,
                    steps: int = 300, batch_size: int = 32, lr: float = 3e-3, d_model: int = 32,
                    n_head: int = 2, n_layer: int = 1, eval_batches: int = 4, seed: int = 0,
                    device: str = "cpu", split: int | None = None) -> dict:
    """Train a RetrievalClassifier with `attention` (AdamW at a constant rate, no clipping) and return
    losses and held-out accuracy (with `split`, also the accuracy on values at distance <= split and
    > split from [CLS])."""
    model = RetrievalClassifier(task, d_model, n_head, n_layer, attention, attention_options, seed).to(device)
    data = ClassificationTask(partial(retrieval_batch, task), task.n_classes, val_batches=eval_batches,
                              val_seed=10_000 + seed)
    data.splits = ("train",)                               # accuracy is measured once, below
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, schedule="constant", warmup=0,
                      weight_decay=0.0, grad_clip=0.0, beta2=0.999, seed=seed + 1, threads=1, num_samples=0)
    losses = fit(model, data, cfg, progress=False, log=lambda *a: None)["batch_losses"]
    tokens, labels, predicted = data.predictions(model)   # the same held-out batches for every kernel
    hits = predicted == labels
    dists = ((tokens >= 1) & (tokens <= task.n_classes)).argmax(axis=1)   # the value's position
    tail = losses[-max(1, steps // 10):]
    result = {"attention": attention, "options": dict(attention_options or {}), "steps": steps,
              "final_loss": float(np.mean(tail)), "accuracy": float(hits.mean()), "chance": 1 / task.n_classes}
    if split is not None:
        near, far = hits[dists <= split], hits[dists > split]
        result["accuracy_near"] = float(near.mean()) if near.size else None
        result["accuracy_far"] = float(far.mean()) if far.size else None
    return result
