"""The one door every attention kernel goes through: shapes, dtypes, devices and masks.

``AttentionKernel.forward`` calls :func:`check_attention_inputs` before any kernel's own math, so the
same bad input gets the same error from every kernel:

* q of shape (B, H, T, D), k and v of shape (B, H, S, D) (the value size equals the key size: the
  contract of a kernel inside ``MultiHeadAttention``), all of one floating dtype on one device. (The
  functional ``attention_forward`` alone also takes values of another size Dv.)
  Wrong ranks and shapes raise ValueError, wrong dtypes TypeError, mixed devices ValueError.
* ``key_padding_mask``: None or a boolean (B, S) array on the same device, **True where the key is
  padding** (PyTorch's convention: the name says what True marks). Another dtype (an integer 0/1
  mask, say) raises TypeError. A mask that marks every key of every sequence as padding raises
  ValueError: nothing could be attended, and it is what a mask of the opposite polarity (True on
  real tokens) looks like on a batch without padding.
* ``causal`` with fewer keys than queries raises ValueError (the mask aligns bottom right).

It returns the mask the kernels compute with, ``key_valid`` (True on real keys), so the kernel files
stay about their own math.
"""
from __future__ import annotations

from .. import backend
from ..nn.checks import check_array, values_trusted


def check_attention_inputs(name: str, q, k, v, causal: bool = False, key_padding_mask=None,
                           value_size_may_differ: bool = False):
    """Raise on bad attention inputs (see the module docstring); return key_valid (B, S) or None.
    value_size_may_differ: accept v of shape (B, H, S, Dv) (the functional `attention_forward` does)."""
    for label, a in (("q", q), ("k", k), ("v", v)):
        check_array(a, f"{name} {label}")
        if a.ndim != 4:
            raise ValueError(f"{name} {label}: expected 4 dimensions (B, H, {'T' if label == 'q' else 'S'}, D), "
                             f"got shape {tuple(a.shape)}")
        if a.dtype.kind != "f":
            raise TypeError(f"{name} {label}: expected a floating-point array, got dtype {a.dtype}")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"{name}: q, k and v must share one dtype, got {q.dtype}, {k.dtype} and {v.dtype}")
    device = backend.device_of(q)
    for label, a in (("k", k), ("v", v)):
        check_array(a, f"{name} {label}", device=device)
    B, H, T, D = q.shape
    S = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(f"{name}: k must have shape (B, H, S, D) = ({B}, {H}, S, {D}) (k and v alike), "
                         f"got {tuple(k.shape)}")
    if value_size_may_differ and tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise ValueError(f"{name}: v must have shape (B, H, S, Dv) = {tuple(k.shape[:3])} + (Dv,), got "
                         f"{tuple(v.shape)}")
    if not value_size_may_differ and tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"{name}: v must have shape (B, H, S, D) = {tuple(k.shape)}, the shape of k, got "
                         f"{tuple(v.shape)} (a kernel's value size equals its key size D)")
    if causal and S < T:
        raise ValueError(f"{name}: a causal mask needs at least as many keys as queries, got T={T} > S={S}")
    if key_padding_mask is None:
        return None
    mask = key_padding_mask
    if not hasattr(mask, "dtype") or mask.dtype.kind != "b":
        raise TypeError(f"{name} key_padding_mask: expected a boolean (B, S) array, True on padding, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)} (an integer mask: pass mask == 0 "
                        "or mask.astype(bool) with the polarity you mean)")
    check_array(mask, f"{name} key_padding_mask", device=device)
    if tuple(mask.shape) != (B, S):
        raise ValueError(f"{name} key_padding_mask: expected shape (B, S) = ({B}, {S}), got {tuple(mask.shape)}")
    if mask.size and not values_trusted() and bool(mask.all()):
        raise ValueError(f"{name} key_padding_mask marks every key of every sequence as padding (True = "
                         "padding, as in PyTorch); a mask that is True on real tokens must be inverted (~mask)")
    return ~mask
