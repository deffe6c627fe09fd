r"""Affine map, the workhorse of every Transformer.

Forward:   $y = x W + b$, with $x \in \mathbb{R}^{N \times C_{in}}$, $W \in \mathbb{R}^{C_{in} \times C_{out}}$.

Backward:  $dx = dy\, W^\top$,  $dW = x^\top dy$,  $db = \sum_n dy_n$.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module


class LinearCache(NamedTuple):
    x: Any          # (N, C_in) the input, flattened over its leading dimensions (a view, no copy)
    w: Any          # (C_in, C_out)
    in_shape: tuple  # the input's original shape, to unflatten dx
    has_bias: bool


# --8<-- [start:linear]
def linear_forward(x, w, b=None):
    """y = x @ w + b over the last axis of x; any number of leading dimensions."""
    x2 = x.reshape(-1, w.shape[0])                    # (..., C_in) -> (N, C_in)
    y = x2 @ w                                        # (N, C_in) @ (C_in, C_out) -> (N, C_out)
    if b is not None:
        y += b
    y = y.reshape(*x.shape[:-1], w.shape[1])          # (N, C_out) -> (..., C_out)
    return y, LinearCache(x2, w, x.shape, b is not None)


def linear_backward(dy, cache: LinearCache):
    """Returns (dx, dw, db); db is None when the forward had no bias."""
    xp = get_array_module(dy)
    dy2 = dy.reshape(-1, cache.w.shape[1])            # (..., C_out) -> (N, C_out)
    # fwd: y = x @ w  =>  dx = dy @ w^T,  dw = x^T @ dy
    dx = (dy2 @ cache.w.T).reshape(cache.in_shape)    # (N, C_out) @ (C_out, C_in) -> (..., C_in)
    dw = cache.x.T @ dy2                              # (C_in, N) @ (N, C_out) -> (C_in, C_out)
    # fwd: y = ... + b (broadcast over rows)  =>  db = sum of dy over rows, as a matrix-vector
    # product with ones (the same sum; BLAS does it faster than a reduction on the CPU)
    db = xp.ones(dy2.shape[0], dy2.dtype) @ dy2 if cache.has_bias else None  # (N,) @ (N, C_out) -> (C_out,)
    return dx, dw, db
# --8<-- [end:linear]
