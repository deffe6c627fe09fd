r"""Pointwise activations of the feed-forward block.

ReLU:          $y = \max(x, 0)$,  $dx = dy \odot [x > 0]$.

GELU (exact):  $y = x\,\Phi(x)$ with $\Phi(x) = \tfrac12\big(1 + \operatorname{erf}(x/\sqrt2)\big)$;
               $dx = dy \odot \big(\Phi(x) + x\,\varphi(x)\big)$, $\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}$.

GELU (tanh):   $y = \tfrac12 x\,(1 + \tanh u)$ with $u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)$;
               $dx = dy \odot \big(\tfrac12(1 + \tanh u) + \tfrac12 x\,(1 - \tanh^2 u)\,
               \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\,x^2)\big)$.

On a CPU the tanh form is much cheaper: NumPy has no erf, and SciPy's costs about as much as
sixty multiplications per element.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from ... import backend
from ...backend import get_array_module

SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_COEF = 0.044715


class ReLUCache(NamedTuple):
    y: Any      # the output; y > 0 exactly where x > 0 (the next layer usually keeps y anyway)


class GELUCache(NamedTuple):
    x: Any      # the input
    cdf: Any    # Phi(x) for the exact form, tanh(u) for the tanh form: kept, not recomputed,
                # because it is the expensive part of the forward


# --8<-- [start:relu]
def relu_forward(x):
    """y = max(x, 0)."""
    xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return y, ReLUCache(y)


def relu_backward(dy, cache: ReLUCache):
    """Returns dx."""
    xp = get_array_module(dy)
    # fwd: y = max(x, 0)  =>  dx = dy where x > 0, else 0
    return xp.multiply(dy, cache.y > 0, dtype=dy.dtype)
# --8<-- [end:relu]


# --8<-- [start:gelu]
def gelu_forward(x):
    """Exact GELU, y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    cdf = backend.erf(x * SQRT_HALF)                 # fresh array, turned into Phi(x) in place
    cdf += 1.0
    cdf *= 0.5
    y = x * cdf
    return y, GELUCache(x, cdf)


def gelu_backward(dy, cache: GELUCache):
    """Returns dx."""
    xp = get_array_module(dy)
    x, cdf = cache.x, cache.cdf
    # fwd: y = x * Phi(x)  =>  dx = dy * (Phi(x) + x * phi(x)),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    dx = x * x
    dx *= -0.5
    xp.exp(dx, out=dx)
    dx *= INV_SQRT_2PI
    dx *= x
    dx += cdf
    dx *= dy
    return dx
# --8<-- [end:gelu]


# --8<-- [start:gelu_tanh]
def gelu_tanh_forward(x):
    """GELU's tanh approximation (GPT-2's), y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    xp = get_array_module(x)
    t = x * x
    t *= GELU_TANH_COEF
    t += 1.0
    t *= x
    t *= SQRT_2_OVER_PI                              # u = sqrt(2/pi) * x * (1 + 0.044715 x^2)
    xp.tanh(t, out=t)                                # tanh(u), kept for the backward
    y = t + 1.0
    y *= x
    y *= 0.5
    return y, GELUCache(x, t)


def gelu_tanh_backward(dy, cache: GELUCache):
    """Returns dx."""
    xp = get_array_module(dy)
    x, th = cache.x, cache.cdf
    # fwd: y = 0.5 x (1 + tanh u)  =>  dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx,
    #      du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    dudx = x * x
    dudx *= 3.0 * GELU_TANH_COEF
    dudx += 1.0
    dudx *= SQRT_2_OVER_PI
    dx = th * th
    dx -= 1.0                                        # tanh^2 u - 1 = -(1 - tanh^2 u)
    dx *= dudx
    dx *= x
    dx *= -0.5                                       # 0.5 x (1 - tanh^2 u) du/dx
    xp.multiply(th, 0.5, out=dudx)                   # (scratch reused) 0.5 tanh u
    dx += dudx
    dx += 0.5                                        # + 0.5 (1 + tanh u)
    dx *= dy
    return dx
# --8<-- [end:gelu_tanh]
