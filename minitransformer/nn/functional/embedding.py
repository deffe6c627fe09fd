r"""Token embedding: a table lookup, and its transpose, a scatter-add.

Forward:   $y_{bt} = W_{\mathrm{idx}_{bt}}$, with $W \in \mathbb{R}^{V \times C}$ and integer ids
$\mathrm{idx} \in \{0, \dots, V-1\}^{B \times T}$.

Backward:  $dW_v = \sum_{(b,t):\, \mathrm{idx}_{bt} = v} dy_{bt}$ (rows of a repeated id add up);
the ids get no gradient.

How the scatter-add is computed is a matter of speed only (``add.at`` is NumPy's slow path):

* a small vocabulary (a character-level model, V of about 65): a one-hot matrix product
  $dW = \mathrm{onehot}(\mathrm{idx})^\top dy$, one BLAS call, about five times faster than ``add.at``;
* a larger one on the CPU: sort the rows by id and add each run of equal ids with ``add.reduceat``
  (the one-hot matrix, V x N, would cost more than it saves), 1.4 to 5 times faster than ``add.at``;
* a larger one on the GPU: ``add.at``, which CuPy runs with atomic additions.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import device_of, get_array_module

ONEHOT_MAX_VOCAB = 80    # above this the sorted scatter wins on a CPU: the two cross between V = 65 and
                         # 128 (docs/figures/tables/embedding_backward.md, C = 384, N = 4096)


class EmbeddingCache(NamedTuple):
    idx: Any           # (N,) the token ids, flattened (a view, no copy)
    w_shape: tuple     # (V, C), to allocate dW without keeping W alive


# --8<-- [start:embedding]
def embedding_forward(idx, w):
    """y = w[idx]: one row of the (V, C) table per integer id; any shape of ids."""
    xp = get_array_module(w)
    y = xp.take(w, idx, axis=0)                        # (B, T) ids, (V, C) -> (B, T, C)
    flat = idx.reshape(-1)                             # (B, T) -> (N,)
    return y, EmbeddingCache(flat, w.shape)


def embedding_backward(dy, cache: EmbeddingCache):
    """Returns (None, dw): ids are not differentiable; dw scatters dy back onto the rows used."""
    xp = get_array_module(dy)
    V, C = cache.w_shape
    dy2 = dy.reshape(-1, C)                            # (..., C) -> (N, C)
    # fwd: y_n = w[idx_n]  =>  dw[v] = sum of dy_n over the n with idx_n = v
    if V <= ONEHOT_MAX_VOCAB:
        onehot = (cache.idx == xp.arange(V)[:, None]).astype(dy.dtype)   # (V, 1) vs (N,) -> (V, N)
        return None, onehot @ dy2                      # (V, N) @ (N, C) -> (V, C)
    dw = xp.zeros((V, C), dtype=dy.dtype)
    if cache.idx.size == 0:
        return None, dw
    if device_of(dy) == "cpu":
        order = xp.argsort(cache.idx)                  # (N,) rows grouped by id
        ids = cache.idx[order]                         # (N,) sorted ids
        starts = xp.flatnonzero(xp.concatenate((xp.ones(1, dtype=bool), ids[1:] != ids[:-1])))  # (U,)
        dw[ids[starts]] = xp.add.reduceat(dy2[order], starts, axis=0)   # (N, C) -> (U, C) run sums
    else:
        xp.add.at(dw, cache.idx, dy2)                  # scatter-add (N, C) rows into (V, C)
    return None, dw
# --8<-- [end:embedding]
