"""Fine-tuning a model that compression has changed (SVD factors, pruning masks, LoRA adapters):
a call of the one training loop, ``train.fit``, on a causal-LM task over token ids, with hooks run
after every optimizer step (a pruning mask keeps its zeros). Also the validation estimate and the
inference-speed measurement the compression report uses.
"""
from __future__ import annotations

import numpy as np  # host-side batches and RNG only

from .. import backend
from ..data.batching import get_batch
from ..tasks import CausalLMTask
from ..train import TrainConfig, evaluate as evaluate_task, fit


def evaluate(model, ids, batch_size: int = 16, iters: int = 20, seed: int = 0) -> float:
    """Mean loss over `iters` random windows of `ids` (same windows for the same seed), in eval mode."""
    task = CausalLMTask(ids, None, model.config.block_size)
    return evaluate_task(model, task, "train", batch_size, iters, seed)


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
             grad_clip: float = 1.0, hooks=(), seed: int = 0, callback=None, progress: bool = False,
             log=None) -> list[float]:
    """Train `model` (forward(idx, targets) -> (logits, loss), backward()) for `steps` AdamW steps
    with a warm-up + cosine schedule, through `train.fit`. Every hook(model) runs after each step
    (e.g. PruningMask.apply keeps pruned weights at zero); callback(step, model) after the hooks.
    Only parameters with requires_grad train. Returns the batch losses."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"finetune: steps must be an integer >= 0, got {steps!r}")
    if steps == 0:
        return []
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10 if min_lr is None else min_lr,
                      warmup=warmup, weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, threads=1,
                      beta1=0.9, beta2=0.99, num_samples=0, dtype=str(np.dtype(model.dtype)))
    task = CausalLMTask(train_ids, None, model.config.block_size)
    model.train()
    model.zero_grad()
    result = fit(model, task, cfg, progress=progress, log=log or (lambda *a: None), hooks=hooks,
                 callback=callback)
    return result["batch_losses"]
# --8<-- [end:finetune]
