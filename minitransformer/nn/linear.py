"""Linear layer: a Module that owns W (C_in, C_out) and b (C_out,) and calls the functional pair."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .checks import check_array
from .functional.linear import linear_backward, linear_forward
from .module import Module, Parameter


class Linear(Module):
    """y = x @ W + b, with W of shape (in_features, out_features).

    Weights are drawn from N(0, std^2) on the host generator `rng` (std defaults to
    1/sqrt(in_features)); the bias starts at zero.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: np.random.Generator | None = None, std: float | None = None):
        super().__init__()
        rng = rng if rng is not None else backend.host_rng(0)
        std = std if std is not None else in_features ** -0.5
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter((rng.standard_normal((in_features, out_features)) * std).astype(np.float32))
        self.bias = Parameter(np.zeros(out_features, np.float32)) if bias else None
        self.cache = None

    # --8<-- [start:linear_module]
    def forward(self, x):
        check_array(x, "Linear input", last_dim=self.in_features, dtype=self.weight.dtype,
                    device=self.weight.device)
        y, cache = linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        dx, dw, db = linear_backward(dy, self.cache)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx
    # --8<-- [end:linear_module]

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


@register("nn.Linear")
def _gradcheck_linear(device: str):
    rng = backend.host_rng(1)
    layer = Linear(5, 3, rng=rng).to(device, "float64")       # non-square
    (x,) = float64_inputs(device, 2, (2, 4, 5))
    return check_module("nn.Linear", layer, [x])
