"""The attention-kernel interface and its registry.

Every attention variant (dense, memory-efficient exact, sliding window, Performer, ...) is an
`AttentionKernel`: a drop-in for scaled dot-product attention inside `MultiHeadAttention`.

* ``forward(q, k, v, causal=False, key_padding_mask=None)``: q of shape (B, H, T, D), k and v of
  shape (B, H, S, D) (S may differ from T, e.g. with a KV cache or cross-attention); returns
  (B, H, T, D). ``key_padding_mask`` is a boolean (B, S) array, True where the key is padding (as in
  PyTorch). A causal mask with S > T aligns to the bottom right: query i sees keys j <= i + S - T.
  ``forward`` is the door: it runs the checks of ``checks.py``, the same for every kernel, then
  calls the kernel's ``attend(q, k, v, causal, key_valid)`` with ``key_valid`` True on real keys.
* ``backward(dout)`` returns ``(dq, dk, dv)`` and adds into the kernel's own parameters, if any
  (Linformer's projections).

A kernel is a Module so it may own parameters (Linformer), random state redrawn in training and
frozen in evaluation (Performer, Reformer), and follow ``.to(device)``. A kernel that cannot do
something (causal Linformer, say) raises ValueError saying so.
"""
from __future__ import annotations

from typing import Callable

from ..nn.module import Module
from .checks import check_attention_inputs


class AttentionKernel(Module):
    """Base class of every attention variant; see the module docstring for the contract."""

    supports_causal = True
    supports_padding = True
    supports_cross = True   # may S differ from T without a causal KV cache?

    def __init__(self, n_head: int, head_dim: int, max_len: int | None = None, rng=None):
        super().__init__()
        self.n_head, self.head_dim, self.max_len = n_head, head_dim, max_len
        self.cache = None

    def check_request(self, causal: bool, key_valid) -> None:
        """Refuse masks this kernel cannot honour, with a clear message."""
        name = type(self).__name__
        if causal and not self.supports_causal:
            raise ValueError(f"{name} cannot apply a causal mask; choose another attention kernel "
                             "for decoders (see minitransformer.attention.kernel_names())")
        if key_valid is not None and not self.supports_padding:
            raise ValueError(f"{name} does not support a key padding mask")

    # --8<-- [start:kernel_door]
    def forward(self, q, k, v, causal: bool = False, key_padding_mask=None):
        """The door: every kernel's inputs are checked here, the same way, then `attend` runs."""
        key_valid = check_attention_inputs(self.kernel_name, q, k, v, causal, key_padding_mask)
        self.check_request(causal, key_valid)
        return self.attend(q, k, v, causal, key_valid)
    # --8<-- [end:kernel_door]

    def attend(self, q, k, v, causal: bool, key_valid):
        """The kernel's own math, on checked inputs; key_valid (B, S) is True on real keys or None."""
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def saved_cache(self):
        """The cache of the last forward, or a clear error when there is none to backpropagate."""
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no forward pass was cached (forward ran "
                               "inside no_grad(), or backward was called twice)")
        return self.cache


_KERNELS: dict[str, Callable[..., AttentionKernel]] = {}


def register_kernel(name: str):
    """Class decorator: make a kernel selectable by `name` in the model config."""
    def wrap(cls):
        if name in _KERNELS and _KERNELS[name] is not cls:
            raise ValueError(f"attention kernel {name!r} registered twice")
        _KERNELS[name] = cls
        cls.kernel_name = name
        return cls
    return wrap


def kernel_names() -> list[str]:
    _import_all_kernels()
    return sorted(_KERNELS)


def make_kernel(name: str, n_head: int, head_dim: int, max_len: int | None = None, rng=None,
                **options) -> AttentionKernel:
    """Build the kernel registered as `name`; unknown names and unknown options raise ValueError."""
    _import_all_kernels()
    if name not in _KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; known: {sorted(_KERNELS)}")
    try:
        return _KERNELS[name](n_head=n_head, head_dim=head_dim, max_len=max_len, rng=rng, **options)
    except TypeError as err:
        raise ValueError(f"attention kernel {name!r}: bad options {sorted(options)}: {err}") from err


def _import_all_kernels() -> None:
    """Import every module of the attention package so each kernel registers itself."""
    import importlib
    import pkgutil

    from .. import attention
    for info in pkgutil.iter_modules(attention.__path__):
        importlib.import_module(f"{attention.__name__}.{info.name}")
