r"""Prepend a learned [CLS] row to a sequence, then add learned position embeddings.

For patch embeddings $E \in \mathbb{R}^{B \times N \times C}$, a class token $c \in \mathbb{R}^{C}$
and a position table $P \in \mathbb{R}^{(N+1) \times C}$ (row 0 is [CLS]'s position):

$$Z_b = \begin{bmatrix} c^\top \\ E_b \end{bmatrix} + P, \qquad Z \in \mathbb{R}^{B \times (N+1) \times C}.$$

[CLS] goes in *before* the positions are added, so it has a position of its own (row 0). Both $c$
and $P$ are shared by every image of the batch, so their gradients sum over it:

$$dE = dZ_{:,1:}, \qquad dc = \sum_b dZ_{b,0}, \qquad dP = \sum_b dZ_b.$$
"""
from __future__ import annotations

from typing import NamedTuple

from ...backend import get_array_module


class ClassTokenCache(NamedTuple):
    B: int      # batch size (the only thing backward needs: every map here is linear)


# --8<-- [start:class_token]
def class_token_forward(e, cls, pos):
    """e (B, N, C), cls (C,), pos (N+1, C) -> z (B, N+1, C) with z[:, 0] = cls + pos[0]."""
    xp = get_array_module(e)
    B, N, C = e.shape
    z = xp.empty((B, N + 1, C), dtype=e.dtype)
    z[:, 0] = cls                                    # (C,) broadcast -> (B, C): [CLS] first
    z[:, 1:] = e                                     # (B, N, C) the patches after it
    z += pos                                         # (B, N+1, C) + (N+1, C)
    return z, ClassTokenCache(B)


def class_token_backward(dz, cache: ClassTokenCache):
    """Returns (de, dcls, dpos)."""
    # fwd: z = [cls; e] + pos  =>  de = dz[:, 1:],  dcls = sum_b dz[b, 0],  dpos = sum_b dz[b]
    de = dz[:, 1:]                                   # (B, N+1, C) -> (B, N, C) (a view)
    dpos = dz.sum(axis=0)                            # (B, N+1, C) -> (N+1, C)
    dcls = dpos[0].copy()                            # the sum over b of dz[b, 0], already in dpos
    return de, dcls, dpos
# --8<-- [end:class_token]
