r"""Decoding: greedy, temperature, top-k and top-p (nucleus) sampling, with a KV cache.

With the cache, each new token costs one position's worth of work: the keys and values of the
earlier positions are kept per layer instead of being recomputed. The first call (the "prefill")
processes the whole prompt.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from . import backend
from .nn.functional.softmax import softmax_forward


# --8<-- [start:sampling]
def filter_logits(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Scale by 1/temperature, keep the top_k largest and/or the smallest set whose probability
    reaches top_p; the rest become -inf. logits: (B, V)."""
    xp = backend.get_array_module(logits)
    logits = logits / temperature
    V = logits.shape[-1]
    if top_k is not None and top_k < V:
        kth = xp.sort(logits, axis=-1)[:, V - top_k][:, None]           # (B, 1) k-th largest
        logits = xp.where(logits < kth, -xp.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = xp.argsort(-logits, axis=-1)                             # (B, V) descending
        sorted_logits = xp.take_along_axis(logits, order, axis=-1)
        probs, _ = softmax_forward(sorted_logits)                         # (B, V) in sorted order
        cum = xp.cumsum(probs, axis=-1)
        drop_sorted = (cum - probs) >= top_p                             # mass before this token already >= p
        inverse = xp.argsort(order, axis=-1)                             # undo the sort
        drop = xp.take_along_axis(drop_sorted, inverse, axis=-1)         # (B, V) in vocabulary order
        logits = xp.where(drop, -xp.inf, logits)
    return logits


def sample_next(logits, rng: np.random.Generator, greedy: bool = False, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None):
    """One token id per row of logits (B, V): argmax if greedy, else a draw from the filtered softmax."""
    xp = backend.get_array_module(logits)
    if greedy or temperature == 0:
        return xp.argmax(logits, axis=-1)
    logits = filter_logits(logits, temperature, top_k, top_p)
    probs, _ = softmax_forward(logits)                                    # filtered tokens: exp(-inf) = 0
    cdf = xp.cumsum(probs, axis=-1)
    cdf /= cdf[:, -1:]
    u = backend.to_device(rng.random((logits.shape[0], 1)), backend.device_of(logits), cdf.dtype)
    return xp.minimum((cdf < u).sum(-1), logits.shape[-1] - 1)            # inverse-CDF draw
# --8<-- [end:sampling]


def check_can_generate(model) -> None:
    """Refuse, with the reason, a model that is not a causal language model."""
    if not getattr(model, "can_generate", False):
        kind = getattr(model, "kind", type(model).__name__)
        raise ValueError(f"a {kind!r} model cannot generate text: sampling needs a causal language model "
                         "(--model gpt)")


def check_sampling(max_new_tokens: int = 1, temperature: float = 1.0, top_k=None, top_p=None,
                   greedy: bool = False, num_samples: int = 1) -> None:
    """Sampling settings at the door: each names the setting, the value and what is allowed."""
    import math
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"the number of samples must be an integer >= 1, got {num_samples!r}")
    if not greedy and not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0 (or use greedy decoding), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def sample_texts(model, tokenizer, num_samples: int, tokens: int, temperature: float = 0.8,
                 top_k: int | None = None, seed: int = 0) -> list[str]:
    """`num_samples` texts of `tokens` characters, each started from a newline (the training
    report's samples)."""
    if not (num_samples and tokens):
        return []
    start = tokenizer.stoi.get("\n", 0)
    prompt = backend.to_device(np.full((num_samples, 1), start, dtype=np.int64), model.device)
    out = generate(model, prompt, tokens, temperature=temperature, top_k=top_k or None, seed=seed)
    return [tokenizer.decode(backend.to_numpy(row)[1:]) for row in out]


# --8<-- [start:generate]
def generate(model, idx, max_new_tokens: int, *, greedy: bool = False, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0,
             use_cache: bool = True):
    """Extend idx (B, T) by max_new_tokens tokens. Returns (B, T + max_new_tokens).

    With use_cache, the prompt is run once and then one token per step; when the context is full,
    the cache is refilled from the last half of the window. Kernels that need as many keys as
    queries (Reformer, BigBird) cannot use a cache and fall back to recomputation. Without it, every step recomputes the
    last block_size tokens (the reference the cache is tested against).
    """
    check_can_generate(model)
    check_sampling(max_new_tokens, temperature, top_k, top_p, greedy)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise ValueError(f"generate: expected a non-empty prompt of token ids (B, T) with T >= 1, got shape "
                         f"{tuple(idx.shape)}")
    xp = backend.get_array_module(idx)
    use_cache = use_cache and model.supports_kv_cache
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    out = idx
    with model.no_grad():
        caches = model.make_kv_caches(idx.shape[0]) if use_cache else None
        step_input = out[:, -block:]
        for _ in range(max_new_tokens):
            if use_cache and caches[0].length + step_input.shape[1] > block:
                for cache in caches:
                    cache.reset()
                step_input = out[:, -(block // 2):]      # refill from the last half window
            logits, _ = model.forward(step_input if use_cache else out[:, -block:], kv_caches=caches)
            next_id = sample_next(logits[:, -1, :], rng, greedy, temperature, top_k, top_p)
            out = xp.concatenate([out, next_id[:, None].astype(out.dtype)], axis=1)   # (B, T+1)
            step_input = out[:, -1:]
    model.train(was_training)
    return out
# --8<-- [end:generate]
