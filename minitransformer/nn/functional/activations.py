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
    slope: Any  # dy/dx at the input, computed in the forward from the pieces it already has
                # (Phi(x) and exp(-x^2/2), or tanh u): the backward is one multiplication and
                # neither x nor Phi(x) needs to be kept


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
def normal_cdf_pdf(x):
    """(Phi(x), phi(x)): the standard normal CDF 0.5 (1 + erf(x / sqrt 2)) and density
    exp(-x^2 / 2) / sqrt(2 pi), as fresh arrays."""
    xp = get_array_module(x)
    if x.dtype.itemsize >= 8 or backend.device_of(x) != "cpu":
        cdf = backend.erf(x * SQRT_HALF)
        cdf += 1.0
        cdf *= 0.5
        pdf = x * x
        pdf *= -0.5
        xp.exp(pdf, out=pdf)
        pdf *= INV_SQRT_2PI
        return cdf, pdf
    # with z = |x| / sqrt(2): t = 1 / (1 + p z),  Phi(-|x|) = 0.5 erfc(z) = 0.5 poly(t) exp(-x^2 / 2)
    t = xp.abs(x)
    t *= AS_P * SQRT_HALF
    t += 1.0
    xp.divide(1.0, t, out=t)                         # (NumPy's divide is faster than its reciprocal)
    a1, a2, a3, a4, a5 = (0.5 * a for a in AS_A)     # the 0.5 folded into the coefficients
    cdf = t * a5                                     # Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
    for a in (a4, a3, a2, a1):
        cdf += a
        cdf *= t
    gauss = xp.multiply(x, x, out=t)                 # (t is no longer needed: reuse its memory)
    gauss *= -0.5
    xp.exp(gauss, out=gauss)                         # exp(-x^2 / 2)
    cdf *= gauss                                     # Phi(-|x|)
    xp.subtract(0.5, cdf, out=cdf)                   # 0.5 - Phi(-|x|) >= 0, so its sign bit is clear
    # Phi(x) - 0.5 = sign(x) (0.5 - Phi(-|x|)) by the symmetry Phi(-x) = 1 - Phi(x): copy x's sign
    # bit into it with an integer OR (what copysign does, several times faster in NumPy)
    uint = xp.dtype(f"u{x.dtype.itemsize}")
    sign_bit = uint.type(1 << (8 * x.dtype.itemsize - 1))
    cdf.view(uint)[...] |= x.view(uint) & sign_bit
    cdf += 0.5
    gauss *= INV_SQRT_2PI                            # phi(x), free from the exp above
    return cdf, gauss
# --8<-- [end:normal_cdf]


# --8<-- [start:gelu]
def gelu_forward(x):
    """Exact GELU, y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))."""
    cdf, slope = normal_cdf_pdf(x)
    y = x * cdf
    # fwd: y = x * Phi(x)  =>  dy/dx = Phi(x) + x * phi(x), stored for the backward
    slope *= x
    slope += cdf
    return y, GELUCache(slope)


def gelu_backward(dy, cache: GELUCache):
    """Returns dx = dy * (Phi(x) + x * phi(x)), the slope computed in the forward."""
    return dy * cache.slope
# --8<-- [end:gelu]


# --8<-- [start:gelu_tanh]
def gelu_tanh_forward(x):
    """GELU's tanh approximation (GPT-2's), y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    xp = get_array_module(x)
    th = x * x
    th *= SQRT_2_OVER_PI * GELU_TANH_COEF
    th += SQRT_2_OVER_PI
    th *= x                                          # u = x (a + b x^2), a = sqrt(2/pi), b = 0.044715 a
    xp.tanh(th, out=th)                              # tanh(u)
    y = x * th
    y += x
    y *= 0.5                                         # 0.5 x (1 + tanh u)
    # fwd: y = 0.5 x (1 + tanh u), u = x (a + b x^2)
    #   =>  dy/dx = 0.5 ((1 + tanh u) + x (1 - tanh^2 u) (a + 3 b x^2)), stored for the backward
    slope = x * x
    slope *= 3.0 * SQRT_2_OVER_PI * GELU_TANH_COEF
    slope += SQRT_2_OVER_PI
    slope *= x                                       # x du/dx = x (a + 3 b x^2)
    sech2 = th * th
    xp.subtract(1.0, sech2, out=sech2)               # 1 - tanh^2 u
    slope *= sech2
    slope += th
    slope += 1.0
    slope *= 0.5
    return y, GELUCache(slope)


def gelu_tanh_backward(dy, cache: GELUCache):
    """Returns dx = dy * dy/dx, the slope computed in the forward."""
    return dy * cache.slope
# --8<-- [end:gelu_tanh]
