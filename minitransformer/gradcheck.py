r"""Numerical gradient checking: the test every hand-written backward pass must pass.

For a function $f$ and a random upstream gradient $g$ (``dout``) we compare the analytic gradient of
the scalar $L = \sum f(x) \odot g$ with central differences,

$$\frac{\partial L}{\partial x_i} \approx \frac{L(x + \varepsilon e_i) - L(x - \varepsilon e_i)}{2\varepsilon},$$

and report the relative error $\lVert a - n\rVert_2 / (\lVert a\rVert_2 + \lVert n\rVert_2)$ per tensor.
Run it in float64: in float32 the rounding error of $L$ divided by $2\varepsilon$ swamps the check.

Public API: :func:`check_functional`, :func:`check_module`, :func:`register` and :func:`run_registered`.
Every differentiable piece of the package registers a small case with :func:`register`; the command
``minitransformer gradcheck`` runs them all.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from . import backend

TOLERANCE = 1e-6


@dataclass
class GradcheckResult:
    """Relative error of each checked tensor; `passed` when the largest is under `tol`."""
    name: str
    errors: dict[str, float] = field(default_factory=dict)
    tol: float = TOLERANCE

    @property
    def max_error(self) -> float:
        return max(self.errors.values()) if self.errors else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.errors) and self.max_error < self.tol

    def __str__(self) -> str:
        worst = max(self.errors, key=self.errors.get) if self.errors else "-"
        return f"{self.name}: max rel err {self.max_error:.2e} ({worst}) {'PASS' if self.passed else 'FAIL'}"


# --8<-- [start:rel_error]
def rel_error(analytic, numeric) -> float:
    """||a - n|| / (||a|| + ||n||), 0 when both are exactly zero."""
    a, n = backend.to_numpy(analytic).astype(np.float64), backend.to_numpy(numeric).astype(np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(n)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - n) / denom)
# --8<-- [end:rel_error]


# --8<-- [start:numerical_gradient]
def numerical_gradient(loss_fn: Callable[[], float], x, eps: float = 1e-6, coords=None):
    """Central differences of the scalar loss_fn() with respect to the array x, perturbed in place.

    coords: optional flat indices to check (a random subset for big tensors); other entries stay 0.
    """
    xp = backend.get_array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)     # views: writing flat[i] perturbs x
    for i in (range(x.size) if coords is None else coords):
        old = flat[i].item()
        flat[i] = old + eps
        plus = loss_fn()
        flat[i] = old - eps
        minus = loss_fn()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad
# --8<-- [end:numerical_gradient]


def _coords(size: int, max_coords: int | None, rng: np.random.Generator):
    if max_coords is None or size <= max_coords:
        return None
    return np.sort(rng.choice(size, max_coords, replace=False))


def _compare(name, analytic, numeric, coords) -> float:
    if coords is not None:
        analytic = backend.to_numpy(analytic).reshape(-1)[coords]
        numeric = backend.to_numpy(numeric).reshape(-1)[coords]
    return rel_error(analytic, numeric)


def check_functional(name: str, forward: Callable, backward: Callable, inputs: list, *,
                     wrt: list[int] | None = None, eps: float = 1e-6, tol: float = TOLERANCE,
                     seed: int = 0, max_coords: int | None = None) -> GradcheckResult:
    """Check a functional pair: forward(*inputs) -> (out, cache); backward(dout, cache) -> grads.

    `backward` must return one gradient per input (None for non-differentiable ones, e.g. masks);
    `wrt` lists the positions to check (default: every floating-point input).
    """
    rng = np.random.default_rng(seed)
    xp = backend.get_array_module(*[a for a in inputs if hasattr(a, "dtype")])
    wrt = wrt if wrt is not None else [
        i for i, a in enumerate(inputs) if hasattr(a, "dtype") and a.dtype.kind == "f"]
    out, cache = forward(*inputs)
    dout = xp.asarray(rng.standard_normal(np.shape(out))).astype(out.dtype)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, (tuple, list)) else (grads,)

    def loss():
        return float((forward(*inputs)[0] * dout).sum())

    result = GradcheckResult(name, tol=tol)
    for i in wrt:
        coords = _coords(inputs[i].size, max_coords, rng)
        numeric = numerical_gradient(loss, inputs[i], eps, coords)
        result.errors[f"input{i}"] = _compare(name, grads[i], numeric, coords)
    return result


def check_module(name: str, module, inputs: list, *, run: Callable | None = None,
                 backward: Callable | None = None, wrt_inputs: list[int] | None = None,
                 eps: float = 1e-6, tol: float = TOLERANCE, seed: int = 0,
                 max_coords: int | None = None) -> GradcheckResult:
    """Check a Module's backward against central differences for its inputs and every parameter.

    run(module, *inputs) -> output (default: module.forward(*inputs));
    backward(module, dout) -> input gradient(s) (default: module.backward(dout)).
    The module should be in float64 and have dropout off (or a fixed mask).
    """
    run = run or (lambda m, *a: m.forward(*a))
    backward = backward or (lambda m, d: m.backward(d))
    rng = np.random.default_rng(seed)
    xp = backend.get_array_module(*[a for a in inputs if hasattr(a, "dtype")])
    wrt_inputs = wrt_inputs if wrt_inputs is not None else [
        i for i, a in enumerate(inputs) if hasattr(a, "dtype") and a.dtype.kind == "f"]

    module.zero_grad()
    out = run(module, *inputs)
    dout = xp.asarray(rng.standard_normal(np.shape(out))).astype(out.dtype)
    dinputs = backward(module, dout)
    dinputs = dinputs if isinstance(dinputs, (tuple, list)) else (dinputs,)

    def loss():
        with module.no_grad():
            return float((run(module, *inputs) * dout).sum())

    result = GradcheckResult(name, tol=tol)
    for i in wrt_inputs:
        coords = _coords(inputs[i].size, max_coords, rng)
        numeric = numerical_gradient(loss, inputs[i], eps, coords)
        result.errors[f"input{i}"] = _compare(name, dinputs[i], numeric, coords)
    for pname, p in module.named_parameters():
        if not p.requires_grad:
            continue
        coords = _coords(p.data.size, max_coords, rng)
        numeric = numerical_gradient(loss, p.data, eps, coords)
        result.errors[pname] = _compare(name, p.grad, numeric, coords)
    return result


# -- the registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[[str], GradcheckResult]] = {}


def register(name: str):
    """Decorator: register `fn(device) -> GradcheckResult` under `name` for `minitransformer gradcheck`."""
    def wrap(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"gradcheck case {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return wrap


def registered() -> dict[str, Callable[[str], GradcheckResult]]:
    """Every registered case, after importing the whole package so each piece can register."""
    package = str(Path(__file__).resolve().parent)      # found by path: no import reaches up
    for info in pkgutil.walk_packages([package], "minitransformer."):
        if info.name.split(".")[-1] not in ("cli", "__main__"):
            importlib.import_module(info.name)
    return dict(sorted(_REGISTRY.items()))


def run_registered(device: str = "cpu", names: list[str] | None = None) -> list[GradcheckResult]:
    cases = registered()
    if names:
        unknown = sorted(set(names) - set(cases))
        if unknown:
            raise ValueError(f"unknown gradcheck case(s) {unknown}; known: {sorted(cases)}")
        cases = {n: cases[n] for n in names}
    return [fn(device) for fn in cases.values()]


def float64_inputs(device: str, seed: int, *shapes, scale: float = 1.0):
    """Random float64 arrays on `device`, a helper for writing registered cases."""
    rng = np.random.default_rng(seed)
    return [backend.to_device(rng.standard_normal(s) * scale, device) for s in shapes]
