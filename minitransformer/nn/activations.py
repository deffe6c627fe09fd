"""Activation Modules (ReLU, GELU) and Softmax: no parameters, they call the functional pairs."""
from __future__ import annotations

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .functional.activations import (gelu_backward, gelu_forward, gelu_tanh_backward,
                                     gelu_tanh_forward, relu_backward, relu_forward)
from .functional.softmax import (log_softmax_backward, log_softmax_forward, softmax_backward,
                                  softmax_forward)
from .module import Module


def _check_float(x, name: str) -> None:
    if not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")


class _Pointwise(Module):
    """Shared plumbing: forward runs `_fwd` and keeps its cache; backward runs `_bwd`."""

    _fwd = _bwd = None

    def __init__(self):
        super().__init__()
        self.cache = None

    def forward(self, x):
        _check_float(x, f"{type(self).__name__} input")
        y, cache = type(self)._fwd(x)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        return type(self)._bwd(dy, self.cache)


class ReLU(_Pointwise):
    """y = max(x, 0)."""

    _fwd, _bwd = staticmethod(relu_forward), staticmethod(relu_backward)


class GELU(_Pointwise):
    """y = x * Phi(x); approximate="tanh" selects GPT-2's tanh form (much cheaper on a CPU)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        _check_float(x, "GELU input")
        fwd = gelu_tanh_forward if self.approximate == "tanh" else gelu_forward
        y, cache = fwd(x)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        bwd = gelu_tanh_backward if self.approximate == "tanh" else gelu_backward
        return bwd(dy, self.cache)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Softmax(_Pointwise):
    """y = softmax(x) along the last axis (fully masked rows of -inf give zeros)."""

    _fwd, _bwd = staticmethod(softmax_forward), staticmethod(softmax_backward)


@register("nn.ReLU")
def _gradcheck_relu(device: str):
    (x,) = float64_inputs(device, 5, (3, 7))          # no exact zeros: the kink is not sampled
    return check_module("nn.ReLU", ReLU(), [x])


@register("nn.GELU")
def _gradcheck_gelu(device: str):
    (x,) = float64_inputs(device, 6, (2, 3, 5), scale=2.0)
    return [check_module("nn.GELU", GELU(), [x]),
            check_module("nn.GELU(tanh)", GELU(approximate="tanh"), [x])]


@register("nn.Softmax")
def _gradcheck_softmax(device: str):
    (x,) = float64_inputs(device, 7, (2, 3, 6), scale=3.0)
    return [check_module("nn.Softmax", Softmax(), [x]),
            check_functional("nn.log_softmax", log_softmax_forward, log_softmax_backward, [x])]
