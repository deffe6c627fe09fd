"""Checks at the door: public entry points call these so bad input fails with a clear message
(what was expected, what came) instead of a broadcasting error deep inside the math.

Shapes, dtypes and devices are known on the host, so checking them costs nothing. The range checks
of token ids and class ids read the values: on a GPU that is a host sync, the host waiting for all
queued work. Each check costs one such transfer at most (the minimum and the maximum travel
together). A caller that has checked the host batch already, before moving it to the device, can
skip even that one with `values_checked_on_host()`.
"""
from __future__ import annotations

import contextlib
import contextvars

from .. import backend

_values_checked = contextvars.ContextVar("values_checked_on_host", default=False)


def check_array(x, name: str, *, ndim=None, last_dim=None, dtype=None, device=None) -> None:
    """Raise TypeError/ValueError unless `x` is an array with the given properties.

    ndim may be an int or a tuple of allowed ints; dtype is compared exactly; device is 'cpu'/'cuda'.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            raise ValueError(f"{name}: expected {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}")
    if last_dim is not None and (x.ndim == 0 or x.shape[-1] != last_dim):
        raise ValueError(f"{name}: expected last dimension {last_dim}, got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {x.dtype} (cast the input or call model.to(dtype=...))")
    if device is not None and backend.device_of(x) != device:
        raise ValueError(f"{name}: expected an array on {device!r}, got one on {backend.device_of(x)!r} "
                         "(move it with minitransformer.backend.to_device)")


@contextlib.contextmanager
def values_checked_on_host():
    """Within this block, `check_token_ids` and `check_targets` do not read the array's values.

    For a trusted caller, the training loop say, that has run the same checks on the host batch
    (free: a NumPy array has nothing to wait for) before moving it to the device:

        check_token_ids(x, "batch", vocab_size)            # NumPy batch: no host sync
        with values_checked_on_host():
            model.forward(to_device(x, "cuda"), ...)       # the model's own checks: no sync either

    Shapes and dtypes are still checked. The setting is per thread (a context variable).
    """
    token = _values_checked.set(True)
    try:
        yield
    finally:
        _values_checked.reset(token)


def values_trusted() -> bool:
    """True inside `values_checked_on_host()`: checks that would read device values skip them."""
    return _values_checked.get()


def _min_max_on_host(lo, hi) -> tuple[int, int]:
    """Two 0-d integer arrays as Python ints, in one transfer from the device."""
    xp = backend.get_array_module(lo, hi)
    lo, hi = backend.to_numpy(xp.stack([lo, hi])).tolist()
    return lo, hi


def check_token_ids(idx, name: str, vocab_size: int, max_len: int | None = None) -> None:
    """Token ids: an integer array (B, T) with B, T >= 1, 0 <= id < vocab_size and T <= max_len.

    The range check costs one host transfer on a device array (none under `values_checked_on_host`).
    """
    check_array(idx, name, ndim=2)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if 0 in idx.shape:
        raise ValueError(f"{name}: expected at least one sequence of at least one token, got shape "
                         f"{tuple(idx.shape)}")
    if max_len is not None and idx.shape[1] > max_len:
        raise ValueError(f"{name}: sequence length {idx.shape[1]} exceeds the context length {max_len}")
    if idx.size and not _values_checked.get():
        lo, hi = _min_max_on_host(idx.min(), idx.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"{name}: token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")


def check_targets(targets, name: str, n_classes: int, ignore_index: int, shape: tuple) -> None:
    """Class-id targets: integers of the given shape, each in [0, n_classes) or equal to ignore_index.

    The range check costs one host transfer on a device array (none under `values_checked_on_host`):
    ignored entries are replaced by the dtype's extremes, so that they take no part in the minimum
    and the maximum, instead of being selected by a boolean mask, whose size would need a sync.
    """
    check_array(targets, name)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class ids, got dtype {targets.dtype}")
    if tuple(targets.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(targets.shape)}")
    if targets.size and not _values_checked.get():
        xp = backend.get_array_module(targets)
        used = targets != ignore_index
        info = xp.iinfo(targets.dtype)
        lo, hi = _min_max_on_host(xp.where(used, targets, info.max).min(), xp.where(used, targets, info.min).max())
        if lo < 0 or hi >= n_classes:        # all ignored: lo, hi = the dtype's max, min, and this passes
            raise ValueError(f"{name}: class ids must lie in [0, {n_classes}) or equal ignore_index={ignore_index}, "
                             f"got values in [{lo}, {hi}]")
