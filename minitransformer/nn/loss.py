"""CrossEntropyLoss: a Module that checks logits and targets at the door and calls the pair."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_module, float64_inputs, register
from .checks import check_array
from .functional.cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from .module import Module


class CrossEntropyLoss(Module):
    """Mean cross-entropy of logits (N, V) or (B, T, V) against integer targets (N,) or (B, T).

    Positions whose target equals `ignore_index` do not count (the mean is over the others);
    `label_smoothing` eps mixes the one-hot target with the uniform distribution,
    (1 - eps) * onehot + eps / V. forward returns a 0-d array (``float(loss)`` gives the number);
    backward(dloss=1.0) returns dlogits.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must lie in [0, 1], got {label_smoothing}")
        self.ignore_index, self.label_smoothing = int(ignore_index), float(label_smoothing)
        self.cache = None

    def forward(self, logits, targets):
        check_array(logits, "CrossEntropyLoss logits", ndim=(2, 3))
        if logits.dtype.kind != "f":
            raise TypeError(f"CrossEntropyLoss logits: expected a floating-point array, got {logits.dtype}")
        check_array(targets, "CrossEntropyLoss targets", device=backend.device_of(logits))
        if targets.dtype.kind not in "iu":
            raise TypeError(f"CrossEntropyLoss targets: expected integer class ids, got dtype {targets.dtype}")
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"CrossEntropyLoss: targets of shape {tuple(targets.shape)} do not match "
                             f"logits of shape {tuple(logits.shape)} (expected targets {tuple(logits.shape[:-1])})")
        V = logits.shape[-1]
        counted = targets[targets != self.ignore_index]
        if counted.size:
            lo, hi = int(counted.min()), int(counted.max())
            if lo < 0 or hi >= V:
                raise ValueError(f"CrossEntropyLoss: targets must lie in [0, {V}) or equal ignore_index="
                                 f"{self.ignore_index}, got values in [{lo}, {hi}]")
        loss, cache = cross_entropy_forward(logits, targets, self.ignore_index, self.label_smoothing)
        self.cache = cache if self.keep_cache else None
        return loss

    def backward(self, dloss=1.0):
        dlogits, _ = cross_entropy_backward(dloss, self.cache)
        return dlogits

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


@register("nn.CrossEntropyLoss")
def _gradcheck_cross_entropy(device: str):
    (logits2,) = float64_inputs(device, 8, (5, 7), scale=3.0)
    t2 = backend.to_device(np.array([0, 6, 3, 3, 1]), device)
    (logits3,) = float64_inputs(device, 9, (2, 3, 4), scale=3.0)
    t3 = backend.to_device(np.array([[1, -100, 3], [0, 2, -100]]), device)
    return [check_module("nn.CrossEntropyLoss", CrossEntropyLoss(), [logits2, t2]),
            check_module("nn.CrossEntropyLoss(ignore, smoothing)",
                         CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1), [logits3, t3])]
