"""Parameter and Module: the two containers every layer and model is built from.

A Module's contract:

* ``forward(*inputs)`` computes the output and keeps what ``backward`` needs (unless caching is
  switched off with ``no_grad()``, as generation does);
* ``backward(dout)`` returns the gradient(s) with respect to the inputs and *adds* (``+=``) into the
  ``.grad`` of each of its parameters;
* ``zero_grad()`` is explicit: gradients accumulate over micro-batches until it is called.

State is more than the parameters. *Buffers* are arrays that are not trained but change the output
(Performer's random features, Reformer's rotations, a quantized layer's int8 weights): a Module lists
their attribute names in ``_buffers``, and ``state_dict()`` / ``load_state_dict()`` carry them with
the weights. *Random generators* (dropout masks, redrawn features) are state for an exact resume:
``random_state()`` / ``set_random_state()`` save and restore every host NumPy generator of the tree.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Iterator

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend


class Parameter:
    """A trainable array and its gradient (same shape, dtype and device)."""

    def __init__(self, data, requires_grad: bool = True):
        self.data = data
        self.requires_grad = requires_grad
        xp = backend.get_array_module(data)
        self.grad = xp.zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return backend.device_of(self.data)

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def to(self, device=None, dtype=None) -> "Parameter":
        device = device or self.device
        self.data = backend.to_device(self.data, device, dtype)
        self.grad = backend.to_device(self.grad, device, dtype)
        return self

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={self.device})"


class Module:
    """Base class: finds its Parameters and sub-Modules among its attributes (lists included)."""

    def __init__(self):
        self.training = True
        self.keep_cache = True  # False inside no_grad(): forward stores nothing for backward

    # -- the two methods every layer implements -------------------------------------------------
    def forward(self, *inputs, **kwargs):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    # -- traversal -------------------------------------------------------------------------------
    def _children(self) -> Iterator[tuple[str, object]]:
        for name, value in vars(self).items():
            if isinstance(value, (Parameter, Module)):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, (Parameter, Module)):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs; a Parameter shared by two modules is listed once."""
        seen: set[int] = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix):
        for name, child in self._children():
            full = f"{prefix}{name}"
            if isinstance(child, Parameter):
                yield full, child
            else:
                yield from child._named_parameters_all(full + ".")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """(dotted name, Module) for this module ("") and every sub-module, depth first."""
        yield prefix.rstrip("."), self
        for name, child in self._children():
            if isinstance(child, Module):
                yield from child.named_modules(f"{prefix}{name}.")

    def named_buffers(self) -> Iterator[tuple[str, object]]:
        """(dotted name, array) of every buffer that is set (see the module docstring)."""
        for name, m in self.named_modules():
            for attr in getattr(m, "_buffers", ()):
                value = getattr(m, attr, None)
                if value is not None:
                    yield (f"{name}.{attr}" if name else attr), value

    def _generators(self) -> Iterator[tuple[str, object]]:
        """(dotted name, host NumPy Generator) of every generator attribute in the tree."""
        for name, m in self.named_modules():
            for attr, value in vars(m).items():
                if isinstance(value, np.random.Generator):
                    yield (f"{name}.{attr}" if name else attr), value

    def random_state(self) -> dict:
        """JSON-able states of every host random generator (dropout, redrawn features), by name."""
        return {name: g.bit_generator.state for name, g in self._generators()}

    def set_random_state(self, state: dict) -> None:
        """Restore what random_state() returned to the generators of the same names. Device
        generators (CuPy's, for dropout on a GPU) are not host state: a run saved on one device and
        resumed on another restores the host generators it has in common, and draws the others
        afresh from their seeds."""
        for name, g in self._generators():
            if name in state:
                g.bit_generator.state = state[name]

    def modules(self) -> Iterator["Module"]:
        """This module and every sub-module, depth first."""
        yield self
        for _, child in self._children():
            if isinstance(child, Module):
                yield from child.modules()

    def num_parameters(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    # -- state -----------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    @contextlib.contextmanager
    def no_grad(self):
        """Inside this block forward keeps no activations (inference, generation)."""
        previous = [(m, m.keep_cache) for m in self.modules()]
        for m, _ in previous:
            m.keep_cache = False
        try:
            yield self
        finally:
            for m, keep in previous:
                m.keep_cache = keep

    def to(self, device=None, dtype=None) -> "Module":
        """Move (and/or cast) every parameter; float buffers named in `_buffers` follow too."""
        if device is not None:
            backend.check_device(device)
        if dtype is not None:
            dtype = backend.check_float_dtype(dtype)
        for p in self.parameters():
            p.to(device, dtype)
        for m in self.modules():
            for name in getattr(m, "_buffers", ()):
                buf = getattr(m, name)
                if buf is None:
                    continue
                cast = dtype if (dtype is not None and buf.dtype.kind == "f") else None
                setattr(m, name, backend.to_device(buf, device or backend.device_of(buf), cast))
        return self

    @property
    def device(self) -> str:
        params = self.parameters()
        return params[0].device if params else "cpu"

    @property
    def dtype(self):
        params = self.parameters()
        return params[0].dtype if params else np.dtype(np.float32)

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Host NumPy copies of every parameter and buffer, by dotted name."""
        state = OrderedDict((n, backend.to_numpy(p.data).copy()) for n, p in self.named_parameters())
        state.update((n, backend.to_numpy(b).copy()) for n, b in self.named_buffers())
        return state

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers, checking names and shapes; parameters keep
        this module's device and dtype, buffers this module's device and their saved dtype."""
        own = dict(self.named_parameters())
        buffers = {name: value for name, value in self.named_buffers()}
        missing = sorted((set(own) | set(buffers)) - set(state))
        unexpected = sorted(set(state) - set(own) - set(buffers))
        if strict and (missing or unexpected):
            raise ValueError(
                f"state dict does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}"
                " (was it saved from another configuration?)"
            )
        for name, p in own.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(
                    f"parameter {name!r}: checkpoint has shape {tuple(value.shape)}, model expects "
                    f"{tuple(p.shape)} (was it saved from another configuration?)"
                )
            p.data = backend.to_device(value, p.device, p.dtype).copy()
        modules = dict(self.named_modules())
        for name, old in buffers.items():
            if name not in state:
                continue
            value = state[name]
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError(f"buffer {name!r}: checkpoint has shape {tuple(value.shape)}, model expects "
                                 f"{tuple(old.shape)} (was it saved from another configuration?)")
            owner, _, attr = name.rpartition(".")
            setattr(modules[owner], attr, backend.to_device(value, backend.device_of(old)).copy())

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._children():
            if isinstance(child, Module):
                body = repr(child).replace("\n", "\n  ")
                lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + (")" if len(lines) == 1 else "\n)")
