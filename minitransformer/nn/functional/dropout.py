r"""Inverted dropout: zero each unit with probability $p$ and scale the survivors by $1/(1-p)$, so
the expected output equals the input and evaluation needs no rescaling.

Forward:   $y = x \odot m / (1 - p)$, with a fixed boolean keep-mask $m$ (drawn by the caller).

Backward:  $dx = dy \odot m / (1 - p)$.

The mask is an input rather than drawn inside, so the pair stays a pure function: the same
(x, mask) always gives the same output, which is what a gradient check needs.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ...backend import get_array_module


class DropoutCache(NamedTuple):
    mask: Any      # (...) boolean, True where the unit is kept (1 byte per unit, not a float)
    scale: float   # 1 / (1 - p)


# --8<-- [start:dropout]
def dropout_forward(x, mask, p: float):
    """y = x * mask / (1 - p); mask is a boolean keep-mask broadcastable to x."""
    xp = get_array_module(x)
    scale = 1.0 / (1.0 - p)
    y = xp.multiply(x, mask, dtype=x.dtype)          # fresh array, scaled in place
    y *= scale
    return y, DropoutCache(mask, scale)


def dropout_backward(dy, cache: DropoutCache):
    """Returns (dx, None, None): the mask and p get no gradient."""
    xp = get_array_module(dy)
    # fwd: y = x * mask * scale  =>  dx = dy * mask * scale
    dx = xp.multiply(dy, cache.mask, dtype=dy.dtype)
    dx *= cache.scale
    return dx, None, None
# --8<-- [end:dropout]
