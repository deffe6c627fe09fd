"""RMSNorm: a Module that owns gamma (ones), no bias, and calls the functional pair (T5's norm)."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .checks import check_array
from .functional.rmsnorm import rmsnorm_backward, rmsnorm_forward
from .module import Module, Parameter


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last axis of size `dim` (eps 1e-6 as in T5)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        if not isinstance(dim, int) or dim < 1 or not eps > 0:
            raise ValueError(f"RMSNorm: expected an int dim >= 1 and eps > 0, got dim={dim!r}, eps={eps!r}")
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, np.float32))    # gamma
        self.cache = None

    def forward(self, x):
        check_array(x, "RMSNorm input", last_dim=self.dim, dtype=self.weight.dtype, device=self.weight.device)
        y, cache = rmsnorm_forward(x, self.weight.data, self.eps)
        self.cache = cache if self.keep_cache else None
        return y

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError("RMSNorm.backward: no forward pass was cached (forward ran inside no_grad())")
        dx, dgamma = rmsnorm_backward(dy, self.cache)
        self.weight.grad += dgamma
        return dx

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


@register("t5.RMSNorm")
def _gradcheck_rmsnorm(device: str):
    rng = backend.host_rng(31)
    results = []
    x, g = float64_inputs(device, 31, (2, 3, 6), (6,), scale=2.0)
    results.append(check_functional("t5.rmsnorm_forward", lambda a, b: rmsnorm_forward(a, b, 1e-6),
                                    rmsnorm_backward, [x, g]))
    layer = RMSNorm(6).to(device, "float64")
    layer.weight.data[...] = backend.to_device(rng.standard_normal(6) + 1.0, device)   # not all ones
    (x1,) = float64_inputs(device, 32, (1, 1, 6), scale=0.5)                              # one row
    results.append(check_module("t5.RMSNorm[module]", layer, [x]))
    results.append(check_module("t5.RMSNorm[one row]", layer, [x1]))
    return results
