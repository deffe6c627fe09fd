"""LayerNorm: a Module that owns gamma (ones) and beta (zeros) and calls the functional pair."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .checks import check_array
from .functional.layernorm import layernorm_backward, layernorm_forward
from .module import Module, Parameter


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis of size `dim`."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        if dim < 1 or not eps > 0:
            raise ValueError(f"LayerNorm: expected dim >= 1 and eps > 0, got dim={dim}, eps={eps}")
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, np.float32))    # gamma
        self.bias = Parameter(np.zeros(dim, np.float32))     # beta
        self.cache = None

    def forward(self, x):
        check_array(x, "LayerNorm input", last_dim=self.dim, dtype=self.weight.dtype,
                    device=self.weight.device)
        y, cache = layernorm_forward(x, self.weight.data, self.bias.data, self.eps)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        dx, dgamma, dbeta = layernorm_backward(dy, self.cache)
        self.weight.grad += dgamma
        self.bias.grad += dbeta
        return dx

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


@register("nn.LayerNorm")
def _gradcheck_layernorm(device: str):
    rng = backend.host_rng(3)
    layer = LayerNorm(6).to(device, "float64")
    layer.weight.data[...] = backend.to_device(rng.standard_normal(6) + 1.0, device)   # not all ones
    layer.bias.data[...] = backend.to_device(rng.standard_normal(6), device)
    (x,) = float64_inputs(device, 3, (2, 3, 6), scale=2.0)
    return check_module("nn.LayerNorm", layer, [x])
