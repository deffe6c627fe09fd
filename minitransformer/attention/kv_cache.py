"""The key/value cache of one attention layer, for fast autoregressive decoding.

Generating token t+1 needs the keys and values of tokens 0..t, which do not change once computed.
A `KVCache` keeps them in buffers of shape (B, H, max_len, D) allocated once; each step writes the
new token's k, v into the next slot and returns views of the filled prefix, so a step costs O(t)
instead of recomputing the projections of the whole prefix (O(t^2) over a generation).

Used under `no_grad()`: nothing flows backward through a cache.
"""
from __future__ import annotations

from .. import backend
from ..nn.checks import check_array


class KVCache:
    """Preallocated (B, H, max_len, D) key and value buffers for one layer.

    The buffers are allocated on the first `append` from the shape, dtype and device of its keys
    (or right away when batch, n_head, head_dim, dtype and device are all given).
    """

    def __init__(self, max_len: int, batch: int | None = None, n_head: int | None = None,
                 head_dim: int | None = None, dtype=None, device: str | None = None):
        if not isinstance(max_len, int) or max_len <= 0:
            raise ValueError(f"KVCache: max_len must be a positive int, got {max_len!r}")
        self.max_len = max_len
        self.k = self.v = None
        self.length = 0
        if None not in (batch, n_head, head_dim, dtype, device):
            xp = backend.xp_for(device)
            dtype = backend.check_float_dtype(dtype)
            self.k = xp.zeros((batch, n_head, max_len, head_dim), dtype)    # (B,H,max_len,D)
            self.v = xp.zeros((batch, n_head, max_len, head_dim), dtype)    # (B,H,max_len,D)

    def append(self, k, v):
        """Write k, v of shape (B, H, t, D) after the cached ones; return (k_all, v_all), views of
        shape (B, H, length, D) over the filled prefix."""
        check_array(k, "KVCache.append k", ndim=4)
        check_array(v, "KVCache.append v", ndim=4, dtype=k.dtype)
        if self.k is None:
            B, H, _, D = k.shape
            xp = backend.get_array_module(k)
            self.k = xp.zeros((B, H, self.max_len, D), k.dtype)             # (B,H,max_len,D)
            self.v = xp.zeros((B, H, self.max_len, v.shape[3]), v.dtype)    # (B,H,max_len,Dv)
        B, H, _, D = self.k.shape
        t = k.shape[2]
        if k.shape[:2] != (B, H) or k.shape[3] != D or v.shape[:3] != k.shape[:3] or v.shape[3] != self.v.shape[3]:
            raise ValueError(f"KVCache.append: expected k, v of shape (B, H, t, D) = ({B}, {H}, t, {D}), "
                             f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
        if k.dtype != self.k.dtype:
            raise TypeError(f"KVCache.append: expected dtype {self.k.dtype}, got {k.dtype}")
        if self.length + t > self.max_len:
            raise ValueError(f"KVCache is full: it holds {self.length} of max_len={self.max_len} positions "
                             f"and cannot take {t} more (crop the context or build a longer cache)")
        self.k[:, :, self.length:self.length + t] = k
        self.v[:, :, self.length:self.length + t] = v
        self.length += t
        return self.keys, self.values

    @property
    def keys(self):
        """(B, H, length, D) view of the cached keys."""
        return None if self.k is None else self.k[:, :, :self.length]

    @property
    def values(self):
        """(B, H, length, Dv) view of the cached values."""
        return None if self.v is None else self.v[:, :, :self.length]

    def reorder(self, rows) -> None:
        """Keep the batch rows `rows` (an integer array, repeats allowed) in that order: beam search
        moves each surviving hypothesis's keys and values under its new slot."""
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]                  # (B,H,max_len,D) -> (len(rows),...)

    def reset(self) -> None:
        """Forget the cached positions (the buffers are kept for reuse)."""
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        shape = None if self.k is None else tuple(self.k.shape)
        return f"KVCache(length={self.length}, max_len={self.max_len}, buffers={shape})"
