r"""Cutting an image into non-overlapping patches, each flattened to one row: the tokens of a ViT.

An image batch $x \in \mathbb{R}^{B \times C_{img} \times S \times S}$ (channels first) with patch side
$P$ dividing $S$ becomes $N = (S/P)^2$ rows of length $C_{img} P^2$:

$$\mathrm{patches}(x)_{b,\; n,\; (c, r, s)} = x_{b,\; c,\; iP + r,\; jP + s},
  \qquad n = i\,(S/P) + j,$$

patches in row-major order over the grid ($i$ the patch row, $j$ the patch column) and each patch
flattened in **(c, r, s) order**: channel first, then the row inside the patch, then the column, so
the flat index is $c P^2 + r P + s$. This is the order of PyTorch's ``Conv2d(C_img, d, P, stride=P)``
weight ``(d, C_img, P, P)``: a patch embedding ``patches(x) @ W`` equals that convolution with
``W = conv.weight.reshape(d, -1).T``.

Every pixel lands in exactly one patch entry, so the map is a permutation of the entries and its
backward is the inverse permutation: $dx = \mathrm{patches}^{-1}(d\,\mathrm{patches})$.
"""
from __future__ import annotations

from typing import NamedTuple


class PatchCache(NamedTuple):
    image_shape: tuple      # (B, C_img, S_h, S_w) of the forward's input
    patch_size: int         # P


def check_patch_grid(shape: tuple, patch_size: int, name: str = "patchify") -> None:
    """The image shape must be (B, C_img, S_h, S_w) with P dividing both sides."""
    if len(shape) != 4:
        raise ValueError(f"{name}: expected images of shape (B, C, H, W), got shape {tuple(shape)}")
    if not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"{name}: patch_size must be a positive int, got {patch_size!r}")
    if shape[2] % patch_size or shape[3] % patch_size:
        raise ValueError(f"{name}: image sides {shape[2]}x{shape[3]} are not divisible by the patch "
                         f"size {patch_size}")


# --8<-- [start:patchify]
def patchify_forward(x, patch_size: int):
    """x (B, C_img, S_h, S_w) -> patches (B, N, C_img P^2), N = (S_h/P)(S_w/P), rows in (c, r, s) order."""
    check_patch_grid(x.shape, patch_size)
    B, Ci, Sh, Sw = x.shape
    P = patch_size
    h, w = Sh // P, Sw // P
    grid = x.reshape(B, Ci, h, P, w, P)                # (B,Ci,Sh,Sw) -> (B,Ci,h,P,w,P): pixel (iP+r, jP+s)
    grid = grid.transpose(0, 2, 4, 1, 3, 5)            # -> (B,h,w,Ci,P,P): patch (i, j), then (c, r, s)
    patches = grid.reshape(B, h * w, Ci * P * P)       # -> (B,N,Ci P^2) (a copy: the axes moved)
    return patches, PatchCache(tuple(x.shape), P)


def patchify_backward(dpatches, cache: PatchCache):
    """dpatches (B, N, C_img P^2) -> dx (B, C_img, S_h, S_w): the inverse permutation."""
    B, Ci, Sh, Sw = cache.image_shape
    P = cache.patch_size
    h, w = Sh // P, Sw // P
    # fwd: patches = reshape(transpose(reshape(x)))  =>  dx = the same steps undone, in reverse
    grid = dpatches.reshape(B, h, w, Ci, P, P)         # (B,N,Ci P^2) -> (B,h,w,Ci,P,P)
    grid = grid.transpose(0, 3, 1, 4, 2, 5)            # -> (B,Ci,h,P,w,P)
    return grid.reshape(B, Ci, Sh, Sw)                 # -> (B,Ci,Sh,Sw)
# --8<-- [end:patchify]


def unpatchify(patches, image_shape: tuple, patch_size: int):
    """The images whose patches these are (for pictures of patches and for tests)."""
    return patchify_backward(patches, PatchCache(tuple(image_shape), patch_size))
