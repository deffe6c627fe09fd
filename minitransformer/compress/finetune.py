"""A short training loop for a model that compression has already changed (SVD factors, pruning
masks, LoRA adapters), with hooks run after every optimizer step, and a validation estimate.

`minitransformer.train.train` builds its model from a config; compressed models are built by
surgery on a trained one, so they are fine-tuned here with the same ingredients (random windows
from `data.batching.get_batch`, AdamW that skips frozen parameters, global-norm clipping).
"""
from __future__ import annotations

import numpy as np  # host-side batches and RNG only

from .. import backend
from ..data.batching import get_batch
from ..optim import AdamW, clip_grad_norm, warmup_cosine


def evaluate(model, ids, batch_size: int = 16, iters: int = 20, seed: int = 0) -> float:
    """Mean loss over `iters` random windows of `ids` (same windows for the same seed), in eval mode."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    losses = []
    with model.no_grad():
        for _ in range(iters):
            x, y = get_batch(ids, batch_size, model.config.block_size, rng)
            _, loss = model.forward(backend.to_device(x, model.device), backend.to_device(y, model.device))
            losses.append(float(loss))
    model.train(was_training)
    return float(np.mean(losses))


def forward_speed(model, ids, batch_size: int = 16, repeats: int = 5, seed: int = 0, reference=None):
    """Inference tokens/s of one forward pass over a batch of full windows, best of `repeats` (the
    least disturbed run: on a shared machine the median scatters with the load of other processes).
    With a `reference` model, both run alternately on the same batch and the result is the pair
    (tokens/s of model, its speed relative to the reference), so load hits both alike."""
    import time
    x, _ = get_batch(ids, batch_size, model.config.block_size, np.random.default_rng(seed))
    x = backend.to_device(x, model.device)
    models = [model] if reference is None else [model, reference]
    best = [float("inf")] * len(models)
    for _ in range(repeats + 1):                       # the first round warms up
        for i, m in enumerate(models):
            with m.no_grad():
                backend.synchronize(m.device)
                t = time.perf_counter()
                m.forward(x)
                backend.synchronize(m.device)
                best[i] = min(best[i], time.perf_counter() - t)
    if reference is None:
        return x.size / best[0]
    return x.size / best[0], best[1] / best[0]


# --8<-- [start:finetune]
def finetune(model, train_ids, steps: int, *, batch_size: int = 12, lr: float = 1e-3,
             min_lr: float | None = None, warmup: int = 0, weight_decay: float = 0.0,
             grad_clip: float = 1.0, hooks=(), seed: int = 0, callback=None) -> list[float]:
    """Train `model` (a GPT-like model: forward(idx, targets) -> (logits, loss), backward()) for
    `steps` AdamW steps with a warm-up + cosine schedule; every hook(model) runs after each step
    (e.g. PruningMask.apply keeps pruned weights at zero). Only parameters with requires_grad train.
    callback(step, model), if given, runs after the hooks (for periodic evaluation).
    Returns the batch losses."""
    if steps < 0:
        raise ValueError(f"finetune: steps must be >= 0, got {steps}")
    if steps == 0:
        return []
    rng = np.random.default_rng(seed)
    opt = AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    min_lr = lr / 10 if min_lr is None else min_lr
    model.train()
    model.zero_grad()
    losses = []
    for step in range(steps):
        opt.lr = warmup_cosine(step, lr, min_lr, warmup, steps)
        x, y = get_batch(train_ids, batch_size, model.config.block_size, rng)
        _, loss = model.forward(backend.to_device(x, model.device), backend.to_device(y, model.device))
        model.backward()
        clip_grad_norm([p for p in model.parameters() if p.requires_grad], grad_clip)
        opt.step()
        opt.zero_grad()
        for hook in hooks:
            hook(model)
        losses.append(float(loss))
        if callback is not None:
            callback(step + 1, model)
    return losses
# --8<-- [end:finetune]
