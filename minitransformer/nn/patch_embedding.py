r"""Patch embedding: cut the image into patches, flatten each, and project it with one matrix.

$$E = \mathrm{patches}(x)\, W + b, \qquad W \in \mathbb{R}^{C_{img}P^2 \times C},$$

one row of $E \in \mathbb{R}^{B \times N \times C}$ per patch. This is a convolution with kernel
size and stride $P$ written as a matrix product (``nn/functional/patches.py`` states the (c, r, s)
order of a flattened patch). Backward: the Linear's $dW = \mathrm{patches}(x)^\top dE$,
$db = \sum dE$, $d\,\mathrm{patches} = dE\,W^\top$, then $dx = \mathrm{patches}^{-1}(d\,\mathrm{patches})$.
"""
from __future__ import annotations

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..gradcheck import check_functional, check_module, float64_inputs, register
from .checks import check_array
from .functional.patches import check_patch_grid, patchify_backward, patchify_forward
from .linear import Linear
from .module import Module


class PatchEmbedding(Module):
    """images (B, channels, S, S) -> (B, N, d_model), N = (S/patch_size)^2.

    The projection is a `Linear(channels * patch_size**2, d_model)` (std 1/sqrt(fan-in)).
    """

    def __init__(self, patch_size: int, channels: int, d_model: int, rng: np.random.Generator | None = None):
        super().__init__()
        if not all(isinstance(v, int) and v >= 1 for v in (patch_size, channels, d_model)):
            raise ValueError(f"PatchEmbedding: patch_size, channels and d_model must be positive ints, got "
                             f"{patch_size!r}, {channels!r}, {d_model!r}")
        self.patch_size, self.channels, self.d_model = patch_size, channels, d_model
        self.proj = Linear(channels * patch_size * patch_size, d_model, rng=rng)
        self.cache = None

    # --8<-- [start:patch_embedding]
    def forward(self, images):
        check_array(images, "PatchEmbedding input", ndim=4, dtype=self.proj.weight.dtype,
                    device=self.proj.weight.device)
        if images.shape[1] != self.channels:
            raise ValueError(f"PatchEmbedding input: expected {self.channels} channel(s) (B, C, H, W), "
                             f"got shape {tuple(images.shape)}")
        check_patch_grid(images.shape, self.patch_size, "PatchEmbedding input")
        patches, cache = patchify_forward(images, self.patch_size)   # (B,Ci,S,S) -> (B,N,Ci P^2)
        self.cache = cache if self.keep_cache else None
        return self.proj(patches)                                     # (B,N,Ci P^2) @ (Ci P^2,C) -> (B,N,C)

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError("PatchEmbedding.backward: no forward pass was cached (forward ran inside no_grad())")
        # fwd: e = patches(x) @ W + b  =>  dpatches = dy @ W^T (dW, db inside Linear.backward)
        dpatches = self.proj.backward(dy)                             # (B,N,C) -> (B,N,Ci P^2)
        return patchify_backward(dpatches, self.cache)                # -> (B,Ci,S,S)
    # --8<-- [end:patch_embedding]

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}, d_model={self.d_model}"


@register("nn.patchify")
def _gradcheck_patchify(device: str):
    (x,) = float64_inputs(device, 30, (2, 3, 4, 6))                 # 3 channels, non-square, P = 2
    return check_functional("nn.patchify", lambda a: patchify_forward(a, 2),
                            lambda d, c: (patchify_backward(d, c),), [x])


@register("nn.patch_embedding")
def _gradcheck_patch_embedding(device: str):
    results = []
    for channels, P, side in ((1, 2, 4), (3, 3, 6), (2, 4, 4)):     # P = S: one patch
        layer = PatchEmbedding(P, channels, 5, rng=backend.host_rng(31)).to(device, "float64")
        (x,) = float64_inputs(device, 32, (2, channels, side, side))
        results.append(check_module(f"nn.patch_embedding[C={channels}, P={P}, S={side}]", layer, [x]))
    return results
