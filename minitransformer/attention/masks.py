r"""Attention masks: boolean arrays, True where a query may attend to a key.

Two kinds of masking cover every model in the package:

* **causal** (decoders): query $i$ may see key $j$ only if $j \le i + S - T$. With as many keys as
  queries ($S = T$) this is the familiar lower triangle. With more keys than queries (a KV cache during
  generation, a Transformer-XL memory) the triangle is aligned to the *bottom right*: the last query is
  the newest token and sees every key.
* **key padding** (batches of unequal lengths): a `(B, S)` array, True on padding, False on real
  tokens (PyTorch's convention: a *padding* mask marks the padding). Inside the kernels it is turned
  once into ``key_valid = ~key_padding_mask``, True where a key may be seen.

Masking is applied to the scores *before* the softmax with $-\infty$, never with a large finite
negative number: with $-10^4$ a masked score still gets weight $e^{-10^4 - m}$, which is exactly 0 in
float32 only while the real scores stay small; scores of a few thousand (or a finite mask added to an
already masked row) leak probability onto the future, a known minGPT bug. A row whose keys are all
masked has no valid softmax; the kernels define its output (and its gradients) as zero.
"""
from __future__ import annotations

from .. import backend


# --8<-- [start:causal_mask]
def causal_mask(T: int, S: int | None = None, device: str = "cpu"):
    """(T, S) boolean mask aligned bottom-right: query i sees key j iff j <= i + S - T."""
    S = T if S is None else S
    if T < 0 or S < 0:
        raise ValueError(f"causal_mask: lengths must be non-negative, got T={T}, S={S}")
    if S < T:
        raise ValueError(f"causal_mask: expected at least as many keys as queries, got T={T} > S={S} "
                         "(a causal mask aligns the last query with the last key)")
    xp = backend.xp_for(device)
    return xp.arange(S)[None, :] <= xp.arange(T)[:, None] + (S - T)   # (1,S) <= (T,1) -> (T,S)
# --8<-- [end:causal_mask]


def padding_mask(lengths, S: int):
    """(B, S) key padding mask from true lengths: row b is True on its padding, the positions from
    lengths[b] on."""
    xp = backend.get_array_module(lengths)
    lengths = xp.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError(f"padding_mask: expected a 1-D integer array of lengths, got shape "
                         f"{tuple(lengths.shape)} and dtype {lengths.dtype}")
    if lengths.size and (int(lengths.min()) < 0 or int(lengths.max()) > S):
        raise ValueError(f"padding_mask: lengths must lie in [0, {S}], got values in "
                         f"[{int(lengths.min())}, {int(lengths.max())}]")
    return xp.arange(S)[None, :] >= lengths[:, None]                   # (1,S) >= (B,1) -> (B,S)


# --8<-- [start:attention_mask]
def attention_mask(T: int, S: int, causal: bool = False, key_padding_mask=None, device: str | None = None):
    """Combine a causal mask and a (B, S) key padding mask (True on padding) into one boolean
    mask, True where a query may attend.

    Returns None when nothing is masked, else an array of shape (B or 1, 1, T, S) that broadcasts over
    the heads of the scores (B, H, T, S).
    """
    if device is None:
        device = "cpu" if key_padding_mask is None else backend.device_of(key_padding_mask)
    mask = None
    if causal:
        mask = causal_mask(T, S, device)[None, None]                    # (T,S) -> (1,1,T,S)
    if key_padding_mask is not None:
        if key_padding_mask.dtype.kind != "b":
            raise TypeError(f"attention_mask: key_padding_mask must be a boolean array, True on padding, "
                            f"got {key_padding_mask.dtype}")
        if key_padding_mask.ndim != 2 or key_padding_mask.shape[1] != S:
            raise ValueError(f"attention_mask: key_padding_mask must be a boolean (B, S={S}) array, True on "
                             f"padding, got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")
        keep = ~key_padding_mask[:, None, None, :]                      # (B,S) -> (B,1,1,S)
        mask = keep if mask is None else mask & keep                    # -> (B,1,T,S)
    return mask
# --8<-- [end:attention_mask]


def mask_to_bias(mask, dtype):
    """Additive form of a boolean mask: 0 where True, -inf where False (never a finite -1e4)."""
    xp = backend.get_array_module(mask)
    bias = xp.zeros(mask.shape, dtype)
    bias[~mask] = -xp.inf
    return bias
