"""Length extrapolation: a GPT trained at one context length, evaluated at longer ones.

`longer_context` rebuilds a trained GPT with a larger ``block_size`` and the same weights. That is
possible when nothing in the weights is tied to the training length: sinusoidal positions (a
formula, its table rebuilt), RoPE (angles computed per position), ALiBi (a penalty per
distance) and T5's bias (a table over distance buckets, the last one open-ended). A learned table has no rows beyond the training length, so there is nothing to evaluate:
`longer_context` refuses it with `NotExtrapolable`, and the benchmark reports "not applicable".
`loss_by_position` is the mean cross-entropy at every position of many windows.
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side window offsets and losses

from .. import backend
from ..models.gpt import GPT


class NotExtrapolable(ValueError):
    """The model's positions are a learned table with no rows beyond its training length."""


def longer_context(model: GPT, block_size: int) -> GPT:
    """The same trained GPT with context `block_size` (>= its own)."""
    c = model.config
    if block_size < c.block_size:
        raise ValueError(f"longer_context: block_size={block_size} is shorter than the model's {c.block_size}")
    if c.positional == "learned":
        raise NotExtrapolable(f"a learned positional table has rows for positions 0..{c.block_size - 1} "
                              f"only; positions up to {block_size - 1} have no embedding to evaluate")
    longer = GPT(dataclasses.replace(c, block_size=block_size)).to(model.device, model.dtype)
    state = model.state_dict()
    state.pop("wpe.pe", None)                # the sinusoidal table is rebuilt from its formula
    longer.load_state_dict(state, strict=False)
    missing = {n for n, _ in longer.named_parameters()} - set(state)
    if missing:
        raise RuntimeError(f"longer_context: parameters not carried over: {sorted(missing)}")
    return longer


def loss_by_position(model, ids: np.ndarray, T: int, windows: int, batch_size: int = 8,
                     seed: int = 0) -> np.ndarray:
    """Mean next-token cross-entropy at positions 0..T-1 over `windows` random windows of `ids`."""
    from ..nn.functional.softmax import log_softmax_forward
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - T - 1, size=windows)
    total = np.zeros(T)
    was_training = model.training
    model.eval()
    with model.no_grad():
        for i in range(0, windows, batch_size):
            s = starts[i:i + batch_size]
            x = np.stack([ids[a:a + T] for a in s])                           # (B, T)
            y = np.stack([ids[a + 1:a + T + 1] for a in s])                   # (B, T)
            logits, _ = model.forward(backend.to_device(x, model.device))
            logp, _ = log_softmax_forward(logits)                             # (B, T, V)
            logp = backend.to_numpy(logp)
            picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]  # (B, T, V) -> (B, T)
            total += -picked.sum(axis=0)
    model.train(was_training)
    return total / windows
