"""Dropout: a Module that draws the keep-mask on the device of its input and calls the functional
pair; the identity in evaluation mode or when p = 0."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, float64_inputs, register
from .functional.dropout import dropout_backward, dropout_forward
from .module import Module


class Dropout(Module):
    """Inverted dropout with drop probability p (0 <= p < 1).

    Masks come from a generator on the input's device, ``backend.device_rng(device, seed)``: one on
    the CPU from the start (so ``Module.random_state()`` saves it for an exact resume), created again
    (from `seed`) when the module or its input moves to another device.
    """

    def __init__(self, p: float = 0.1, seed: int | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: expected 0 <= p < 1, got p={p}")
        self.p, self.seed = float(p), seed
        self._rng, self._rng_device = backend.device_rng("cpu", seed), "cpu"
        self.cache, self._identity = None, False

    def _generator(self, device: str):
        if self._rng is None or self._rng_device != device:
            self._rng, self._rng_device = backend.device_rng(device, self.seed), device
        return self._rng

    def reseed(self, seed: int | None) -> None:
        """Draw the next masks from a new generator seeded with `seed`."""
        device = self._rng_device or "cpu"
        self.seed, self._rng, self._rng_device = seed, backend.device_rng(device, seed), device

    def to(self, device=None, dtype=None) -> "Dropout":
        super().to(device, dtype)
        if device is not None and device != self._rng_device:
            self._rng, self._rng_device = None, None      # re-created on the new device at next use
        return self

    def forward(self, x):
        if not hasattr(x, "dtype") or x.dtype.kind != "f":
            raise TypeError(f"Dropout input: expected a floating-point array, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if not self.training or self.p == 0.0:
            self.cache, self._identity = None, True
            return x
        # float32 uniforms are enough to resolve p and are twice as cheap to draw as float64
        u = self._generator(backend.device_of(x)).random(x.shape, dtype=np.float32)
        mask = u >= self.p                                  # (...) boolean, kept with prob 1 - p
        y, cache = dropout_forward(x, mask, self.p)
        self.cache, self._identity = (cache if self.keep_cache else None), False
        return y

    def backward(self, dy):
        if self._identity:                                  # eval mode or p = 0
            return dy
        if self.cache is None:
            raise RuntimeError("Dropout.backward: the forward kept no mask (it ran under no_grad())")
        dx, _, _ = dropout_backward(dy, self.cache)
        return dx

    def extra_repr(self) -> str:
        return f"p={self.p}"


def reseed_replica(model, index: int) -> None:
    """Give every Dropout of `model`, replica `index` of a data-parallel group, a mask stream of its
    own (seed * 1_000_003 + index), so that the shards of one batch do not share dropout masks.
    Replica 0 keeps its seeds; unseeded Dropouts already draw fresh entropy."""
    if index == 0:
        return
    for module in model.modules():
        if isinstance(module, Dropout) and module.seed is not None:
            module.reseed(module.seed * 1_000_003 + index)


@register("nn.Dropout")
def _gradcheck_dropout(device: str):
    (x,) = float64_inputs(device, 4, (2, 3, 5))
    mask = backend.to_device(backend.host_rng(4).random((2, 3, 5)) >= 0.3, device)   # a fixed mask
    return check_functional("nn.Dropout", dropout_forward, dropout_backward, [x, mask, 0.3])
