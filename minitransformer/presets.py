"""Named configurations: `minitransformer train --preset NAME`.

* ``default``: the README's main job, a small GPT on the built-in corpus, a few minutes on 2 CPU cores.
* ``tiny``: seconds; for smoke tests.
* ``shakespeare-cpu`` / ``shakespeare-gpu``: nanoGPT's character-level baselines (run with
  ``--data ../shared/data/tinyshakespeare.txt``).
"""
from __future__ import annotations

from .models.gpt import GPTConfig
from .train import TrainConfig

PRESETS = {
    "default": (
        GPTConfig(n_layer=4, n_head=4, d_model=128, block_size=64, dropout=0.0),
        TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100,
                    eval_interval=250, eval_iters=20),
    ),
    "tiny": (
        GPTConfig(n_layer=2, n_head=2, d_model=32, block_size=32),
        TrainConfig(steps=60, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5, eval_interval=30,
                    eval_iters=4, sample_tokens=40),
    ),
    "shakespeare-cpu": (
        GPTConfig(n_layer=4, n_head=4, d_model=128, block_size=64, dropout=0.0),
        TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100,
                    eval_interval=250, eval_iters=20),
    ),
    "shakespeare-gpu": (
        GPTConfig(n_layer=6, n_head=6, d_model=384, block_size=256, dropout=0.2),
        TrainConfig(steps=5000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=100,
                    eval_interval=250, eval_iters=200),
    ),
}
