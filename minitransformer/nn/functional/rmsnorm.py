r"""Root-mean-square normalisation over the last (feature) axis (Zhang & Sennrich 2019; T5's norm).

Forward, per row $x \in \mathbb{R}^C$: no mean is subtracted and there is no bias,

$$r = 1/\sqrt{\tfrac1C \textstyle\sum_c x_c^2 + \varepsilon},\qquad \hat x = x\, r,\qquad y = \hat x \odot \gamma.$$

Backward, with $d\hat x = dy \odot \gamma$ and the row mean $\overline{\,\cdot\,}$:

$$dx = r\,\big(d\hat x - \hat x\, \overline{d\hat x \odot \hat x}\big),\qquad
d\gamma = \textstyle\sum_{rows} dy \odot \hat x .$$

It is LayerNorm's gradient without the term that came from the mean.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module


class RMSNormCache(NamedTuple):
    xhat: Any        # (N, C) the normalised input; x itself is not kept (xhat and rstd suffice)
    rstd: Any        # (N, 1) 1 / sqrt(mean(x^2) + eps)
    gamma: Any       # (C,)
    in_shape: tuple  # the input's original shape, to unflatten dx


# --8<-- [start:rmsnorm_forward]
def rmsnorm_forward(x, gamma, eps: float = 1e-6):
    """y = x / sqrt(mean(x^2) + eps) * gamma over the last axis; any number of leading dims."""
    xp = get_array_module(x)
    C = x.shape[-1]
    x2 = x.reshape(-1, C)                                # (..., C) -> (N, C)
    ms = xp.einsum("nc,nc->n", x2, x2)                   # (N, C) -> (N,), C times the mean square
    ms /= C
    ms += eps                                            # eps inside the square root
    rstd = (ms ** -0.5)[:, None]                         # (N,) -> (N, 1)
    xhat = x2 * rstd                                     # (N, C)
    y = xhat * gamma
    return y.reshape(x.shape), RMSNormCache(xhat, rstd, gamma, x.shape)   # (N, C) -> (..., C)
# --8<-- [end:rmsnorm_forward]


# --8<-- [start:rmsnorm_backward]
def rmsnorm_backward(dy, cache: RMSNormCache):
    """Returns (dx, dgamma)."""
    xp = get_array_module(dy)
    xhat, rstd, gamma = cache.xhat, cache.rstd, cache.gamma
    N, C = xhat.shape
    dy2 = dy.reshape(N, C)                               # (..., C) -> (N, C)
    # fwd: y = xhat * gamma  =>  dgamma = sum over rows of dy * xhat
    dy_xhat = dy2 * xhat                                 # (N, C)
    dgamma = xp.ones(N, dtype=dy.dtype) @ dy_xhat        # (N,) @ (N, C) -> (C,)
    # fwd: y = xhat * gamma  =>  dxhat = dy * gamma;  mean(dxhat * xhat) = (dy * xhat) @ gamma / C
    m = dy_xhat @ (gamma / C)                            # (N, C) @ (C,) -> (N,)
    # fwd: xhat = x * r(x)  =>  dx = r * (dxhat - xhat * mean(dxhat * xhat))
    dx = dy2 * gamma                                     # (N, C) dxhat, turned into dx in place
    dx -= xhat * m[:, None]
    dx *= rstd
    return dx.reshape(cache.in_shape), dgamma            # (N, C) -> (..., C)
# --8<-- [end:rmsnorm_backward]
