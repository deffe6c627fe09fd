r"""Layer normalisation over the last (feature) axis.

Forward, per row $x \in \mathbb{R}^C$:

$$\mu = \tfrac1C \textstyle\sum_c x_c,\quad \sigma^2 = \tfrac1C \sum_c (x_c - \mu)^2,\quad
r = 1/\sqrt{\sigma^2 + \varepsilon},\quad \hat x = (x - \mu)\, r,\quad y = \hat x \odot \gamma + \beta.$$

Backward, with $d\hat x = dy \odot \gamma$ and means $\overline{\,\cdot\,}$ taken along the row:

$$dx = r\,\big(d\hat x - \overline{d\hat x} - \hat x\, \overline{d\hat x \odot \hat x}\big),\qquad
d\gamma = \textstyle\sum_{rows} dy \odot \hat x,\qquad d\beta = \sum_{rows} dy.$$
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module


class LayerNormCache(NamedTuple):
    xhat: Any       # (N, C) the normalised input; x itself is not kept (xhat and rstd suffice)
    rstd: Any       # (N, 1) 1 / sqrt(var + eps)
    gamma: Any      # (C,)
    in_shape: tuple  # the input's original shape, to unflatten dx


# Row sums are written as matrix-vector products (x @ ones) rather than x.mean(axis=1): the same
# numbers, and BLAS computes them several times faster on a CPU.

# --8<-- [start:layernorm_forward]
def layernorm_forward(x, gamma, beta, eps: float = 1e-5):
    """y = (x - mean) * rstd * gamma + beta over the last axis; any number of leading dims."""
    xp = get_array_module(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)                                # (..., C) -> (N, C)
    ones = xp.ones(C, dtype=x.dtype)
    mean = x2 @ ones                                     # (N, C) @ (C,) -> (N,)
    mean /= C
    xhat = x2 - mean[:, None]                            # (N, C), fresh: normalised in place below
    var = xp.einsum("nc,nc->n", xhat, xhat)              # (N, C) -> (N,), C times the biased variance
    var /= C
    var += eps                                           # eps inside the square root
    rstd = (var ** -0.5)[:, None]                        # (N,) -> (N, 1)
    xhat *= rstd
    y = xhat * gamma
    y += beta
    return y.reshape(x.shape), LayerNormCache(xhat, rstd, gamma, x.shape)   # (N, C) -> (..., C)
# --8<-- [end:layernorm_forward]


# --8<-- [start:layernorm_backward]
def layernorm_backward(dy, cache: LayerNormCache):
    """Returns (dx, dgamma, dbeta)."""
    xp = get_array_module(dy)
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    N, C = xhat.shape
    dy2 = dy.reshape(N, C)                               # (..., C) -> (N, C)
    ones = xp.ones(N, dtype=dy.dtype)
    # fwd: y = xhat * gamma + beta  =>  dbeta = sum of dy,  dgamma = sum of dy * xhat (over rows)
    dbeta = ones @ dy2                                   # (N,) @ (N, C) -> (C,)
    dy_xhat = dy2 * xhat                                 # (N, C), reused for the row means below
    dgamma = ones @ dy_xhat                              # (N,) @ (N, C) -> (C,)
    # fwd: y = xhat * gamma  =>  dxhat = dy * gamma; its row means come straight from dy:
    #   mean(dxhat) = dy @ gamma / C,  mean(dxhat * xhat) = (dy * xhat) @ gamma / C
    gamma_mean = gamma / C
    m1 = dy2 @ gamma_mean                                # (N, C) @ (C,) -> (N,)
    m2 = dy_xhat @ gamma_mean                            # (N, C) @ (C,) -> (N,)
    # fwd: xhat = (x - mean) * rstd  =>  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    dx = dy2 * gamma                                     # (N, C) dxhat, turned into dx in place
    dx -= m1[:, None]                                    # term 1 - term 2
    term3 = xp.multiply(xhat, m2[:, None], out=dy_xhat)  # (dy * xhat is no longer needed)
    dx -= term3
    dx *= rstd
    return dx.reshape(cache.in_shape), dgamma, dbeta     # (N, C) -> (..., C)
# --8<-- [end:layernorm_backward]
