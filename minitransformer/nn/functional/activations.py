r"""Pointwise activations of the feed-forward block.

ReLU:          $y = \max(x, 0)$,  $dx = dy \odot [x > 0]$.

GELU (exact):  $y = x\,\Phi(x)$ with $\Phi(x) = \tfrac12\big(1 + \operatorname{erf}(x/\sqrt2)\big)$;
               $dx = dy \odot \big(\Phi(x) + x\,\varphi(x)\big)$, $\varphi(x) = e^{-x^2/2}/\sqrt{2\pi}$.

GELU (tanh):   $y = \tfrac12 x\,(1 + \tanh u)$ with $u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)$;
               $dx = dy \odot \big(\tfrac12(1 + \tanh u) + \tfrac12 x\,(1 - \tanh^2 u)\,
               \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\,x^2)\big)$.

NumPy has no erf and SciPy's costs as much as about seventy multiplications per element, so on the
CPU in float32 (and float16) $\Phi$ comes from the rational approximation of Abramowitz and Stegun
(7.1.26): absolute error below $1.5 \cdot 10^{-7}$, about $3 \cdot 10^{-7}$ on $\Phi$ once float32
rounding is added (a few float32 ulps; the GELU output is as accurate as with SciPy's erf), at a
fraction of the cost. float64 (the gradient checks) and the GPU use the library erf.
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
# Abramowitz & Stegun 7.1.26: erfc(z) = t (a1 + a2 t + ... + a5 t^4) exp(-z^2) + e, t = 1 / (1 + p z),
# z >= 0, |e| < 1.5e-7
AS_P = 0.3275911
AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


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


# --8<-- [start:normal_cdf]
def normal_cdf(x):
    """Phi(x) = 0.5 * (1 + erf(x / sqrt(2))), the standard normal CDF, as a fresh array."""
    xp = get_array_module(x)
    if x.dtype.itemsize >= 8 or backend.device_of(x) != "cpu":
        cdf = backend.erf(x * SQRT_HALF)
        cdf += 1.0
        cdf *= 0.5
        return cdf
    # with z = |x| / sqrt(2): t = 1 / (1 + p z),  Phi(-|x|) = 0.5 erfc(z) = 0.5 poly(t) exp(-x^2 / 2)
    t = xp.abs(x)
    t *= AS_P * SQRT_HALF
    t += 1.0
    xp.reciprocal(t, out=t)
    a1, a2, a3, a4, a5 = (0.5 * a for a in AS_A)     # the 0.5 folded into the coefficients
    cdf = t * a5                                     # Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
    for a in (a4, a3, a2, a1):
        cdf += a
        cdf *= t
    gauss = xp.multiply(x, x, out=t)                 # (t is no longer needed: reuse its memory)
    gauss *= -0.5
    xp.exp(gauss, out=gauss)                         # exp(-x^2 / 2)
    cdf *= gauss                                     # Phi(-|x|)
    xp.subtract(0.5, cdf, out=cdf)                   # 0.5 - Phi(-|x|) >= 0
    xp.copysign(cdf, x, out=cdf)                     # Phi(x) - 0.5, by the symmetry Phi(-x) = 1 - Phi(x)
    cdf += 0.5
    return cdf
# --8<-- [end:normal_cdf]


# --8<-- [start:gelu]
def gelu_forward(x):
    """Exact GELU, y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    cdf = normal_cdf(x)
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
    th = x * x
    th *= SQRT_2_OVER_PI * GELU_TANH_COEF
    th += SQRT_2_OVER_PI
    th *= x                                          # u = x (a + b x^2), a = sqrt(2/pi), b = 0.044715 a
    xp.tanh(th, out=th)                              # tanh(u), kept for the backward
    y = x * th
    y += x
    y *= 0.5                                         # 0.5 x (1 + tanh u)
    return y, GELUCache(x, th)


def gelu_tanh_backward(dy, cache: GELUCache):
    """Returns dx."""
    xp = get_array_module(dy)
    x, th = cache.x, cache.cdf
    # fwd: y = 0.5 x (1 + tanh u), u = x (a + b x^2)
    #   =>  dx = dy * 0.5 * ((1 + tanh u) + x (1 - tanh^2 u) (a + 3 b x^2))
    dx = x * x
    dx *= 3.0 * SQRT_2_OVER_PI * GELU_TANH_COEF
    dx += SQRT_2_OVER_PI
    dx *= x                                          # x du/dx = x (a + 3 b x^2)
    sech2 = th * th
    xp.subtract(1.0, sech2, out=sech2)               # 1 - tanh^2 u
    dx *= sech2
    dx += th
    dx += 1.0
    dx *= dy
    dx *= 0.5
    return dx
# --8<-- [end:gelu_tanh]
