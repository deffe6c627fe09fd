r"""Cross-entropy between the softmax of logits and integer targets, with label smoothing and
ignored positions; the loss every language model in the package trains on.

Forward, for rows $n$ with logits $z_n \in \mathbb{R}^V$, target $t_n$ and the smoothed target
distribution $q_n = (1-\varepsilon)\,\mathrm{onehot}(t_n) + \varepsilon / V$:

$$\ell_n = -\sum_v q_{nv} \log p_{nv} = \mathrm{lse}(z_n) - (1-\varepsilon)\, z_{n t_n} - \varepsilon\, \bar z_n,
\qquad L = \frac{1}{|\mathcal{K}|} \sum_{n \in \mathcal{K}} \ell_n,$$

where $p_n = \operatorname{softmax}(z_n)$, $\bar z_n$ is the mean logit of row $n$ and $\mathcal{K}$ the
rows whose target is not ``ignore_index`` ($L = 0$ when every row is ignored).

Backward:  $dz_n = dL \cdot (p_n - q_n) / |\mathcal{K}|$ for $n \in \mathcal{K}$, zero on ignored rows.

The softmax $p$ is computed once in the forward (the logsumexp needs it anyway) and kept for the
backward: one (N, V) array, the size of the logits.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module
from .softmax import shifted_exp

IGNORE_INDEX = -100   # the target id every loss and model of the package skips (as in PyTorch)


class CrossEntropyCache(NamedTuple):
    probs: Any              # (N, V) softmax of the logits
    targets: Any            # (N,) targets, ignored positions replaced by 0 (any valid index)
    weight: Any             # (N,) 1/|K| on counted rows, 0 on ignored rows
    label_smoothing: float  # epsilon
    in_shape: tuple         # the logits' original shape, (N, V) or (B, T, V)


# --8<-- [start:cross_entropy_forward]
def cross_entropy_forward(logits, targets, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0):
    """Mean cross-entropy over the non-ignored rows; logits (..., V), integer targets (...).

    Returns (loss, cache) with loss a 0-d array of the logits' dtype.
    """
    xp = get_array_module(logits)
    V = logits.shape[-1]
    z = logits.reshape(-1, V)                          # (..., V) -> (N, V)
    t = targets.reshape(-1)                            # (...) -> (N,)
    keep = t != ignore_index                           # (N,) rows that count
    t = xp.where(keep, t, 0)                           # a safe index on ignored rows
    weight = keep.astype(z.dtype)                      # (N,)
    weight /= xp.maximum(weight.sum(), 1)              # 1/|K| on counted rows (no host sync)
    probs, s, m = shifted_exp(z, xp)                   # (N, V) exp(z - m), (N, 1) its sum, (N, 1) max
    log_s = xp.log(s[:, 0])                            # (N, 1) -> (N,)
    # -log p_t = lse - z_t = log s + (m - z_t): the large m and z_t cancel before anything is added
    nll = m[:, 0] - z[xp.arange(z.shape[0]), t]        # (N,)
    if label_smoothing:
        # -mean_v log p_v = log s - mean_v (z_v - m): the mean of the shifted logits, not m - mean_v z_v,
        # whose mean is rounded at the size of m (30 float32 ulps of the loss on rows near 300)
        nll *= 1.0 - label_smoothing
        nll -= label_smoothing * (z - m).mean(axis=1)  # (N, V) - (N, 1) -> (N, V) -> (N,), a temporary
    nll += log_s
    loss = (nll * weight).sum()                        # (N,) -> (), the weighted mean
    probs /= s                                         # (N, V) softmax, kept for the backward
    return loss, CrossEntropyCache(probs, t, weight, float(label_smoothing), logits.shape)
# --8<-- [end:cross_entropy_forward]


# --8<-- [start:cross_entropy_backward]
def cross_entropy_backward(dloss, cache: CrossEntropyCache):
    """Returns (dlogits, None): targets get no gradient. dloss is a scalar (1.0 for the loss itself)."""
    xp = get_array_module(cache.probs)
    probs, eps = cache.probs, cache.label_smoothing
    N, V = probs.shape
    scale = cache.weight * xp.asarray(dloss, dtype=probs.dtype)   # (N,) dL/d ell_n
    # fwd: L = sum_n w_n sum_v q_nv (-log p_nv)  =>  dz_n = w_n (p_n - q_n),
    #      q_n = (1 - eps) onehot(t_n) + eps / V
    dz = probs * scale[:, None]                        # (N, V) term 1: w_n p_n
    dz[xp.arange(N), cache.targets] -= (1.0 - eps) * scale   # term 2: the one-hot part of q
    if eps:
        dz -= (eps / V) * scale[:, None]               # term 3: the uniform part of q
    return dz.reshape(cache.in_shape), None            # (N, V) -> (..., V)
# --8<-- [end:cross_entropy_backward]
