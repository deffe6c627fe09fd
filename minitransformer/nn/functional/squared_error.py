r"""Weighted mean squared error: the loss of a model that predicts real numbers.

Forward, for predictions $\hat y$ and targets $y$ of shape (B, T, n_out) and weights $w$ of shape
(B, T) (1 where a position is scored, 0 where it is not):

$$\mathcal{L} = \frac{1}{\sum_{b,t} w_{bt}} \sum_{b,t} w_{bt} \sum_{o} (\hat y_{bto} - y_{bto})^2 .$$

Backward:  $d\hat y_{bto} = d\mathcal{L} \cdot 2\, w_{bt} (\hat y_{bto} - y_{bto}) / \sum w$.
(The targets and weights are data: they get no gradient.)
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ... import backend
from ...backend import get_array_module
from ...gradcheck import check_functional, register


class SquaredErrorCache(NamedTuple):
    scaled_diff: Any    # (B, T, n_out): w * (pred - target) / sum(w), all backward needs


# --8<-- [start:squared_error]
def squared_error_forward(pred, target, weights):
    """(mean weighted squared error as a 0-d array, cache); the mean runs over the weight mass."""
    xp = get_array_module(pred)
    diff = pred - target                                          # (B, T, n_out)
    total = weights.sum()
    scaled = diff * (weights / xp.maximum(total, 1e-30))[..., None]   # (B,T,n_out) * (B,T,1)
    loss = (scaled * diff).sum()
    return loss, SquaredErrorCache(scaled)


def squared_error_backward(dloss, cache: SquaredErrorCache):
    """d pred; fwd: L = sum(w (pred - y)^2) / sum(w)  =>  dpred = dloss * 2 w (pred - y) / sum(w)."""
    return 2.0 * dloss * cache.scaled_diff
# --8<-- [end:squared_error]


@register("nn.functional.squared_error")
def _gradcheck_squared_error(device: str):
    rng = backend.host_rng(11)
    pred, y = (backend.to_device(rng.standard_normal((2, 4, 3)), device) for _ in range(2))
    w = backend.to_device(rng.random((2, 4)), device)
    return check_functional("nn.functional.squared_error", squared_error_forward,
                            lambda d, cache: (squared_error_backward(d, cache), None, None), [pred, y, w], wrt=[0])
