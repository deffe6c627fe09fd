"""The [CLS] token and learned positions of a ViT: a Module owning both, calling the functional pair."""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .checks import check_array
from .functional.class_token import class_token_backward, class_token_forward
from .module import Module, Parameter


class ClassTokenAndPositions(Module):
    """e (B, n_patches, d_model) -> (B, n_patches + 1, d_model): [CLS] prepended, positions added.

    [CLS] starts at zero (ViT, Dosovitskiy et al. 2021); the positions are drawn from N(0, std^2).
    """

    def __init__(self, n_patches: int, d_model: int, rng: np.random.Generator | None = None,
                 std: float = 0.02):
        super().__init__()
        if not all(isinstance(v, int) and v >= 1 for v in (n_patches, d_model)):
            raise ValueError(f"ClassTokenAndPositions: n_patches and d_model must be positive ints, got "
                             f"{n_patches!r}, {d_model!r}")
        rng = rng if rng is not None else backend.host_rng(0)
        self.n_patches, self.d_model = n_patches, d_model
        self.cls = Parameter(np.zeros(d_model, np.float32))
        self.pos = Parameter((rng.standard_normal((n_patches + 1, d_model)) * std).astype(np.float32))
        self.cache = None

    def forward(self, e):
        check_array(e, "ClassTokenAndPositions input", ndim=3, last_dim=self.d_model, dtype=self.pos.dtype,
                    device=self.pos.device)
        if e.shape[1] != self.n_patches:
            raise ValueError(f"ClassTokenAndPositions input: expected {self.n_patches} patches, got shape "
                             f"{tuple(e.shape)}")
        z, cache = class_token_forward(e, self.cls.data, self.pos.data)
        self.cache = cache if self.keep_cache else None
        return z

    def backward(self, dz):
        if self.cache is None:
            raise RuntimeError("ClassTokenAndPositions.backward: no forward pass was cached")
        de, dcls, dpos = class_token_backward(dz, self.cache)
        self.cls.grad += dcls
        self.pos.grad += dpos
        return de

    def extra_repr(self) -> str:
        return f"n_patches={self.n_patches}, d_model={self.d_model}"


@register("nn.vit_class_token")
def _gradcheck_class_token(device: str):
    e, cls, pos = float64_inputs(device, 33, (3, 4, 5), (5,), (5, 5))
    pair = check_functional("nn.vit_class_token[functional]", class_token_forward, class_token_backward,
                            [e, cls, pos])
    layer = ClassTokenAndPositions(4, 5, rng=backend.host_rng(34), std=1.0).to(device, "float64")
    module = check_module("nn.vit_class_token[module]", layer, [e])
    return [pair, module]
