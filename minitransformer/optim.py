r"""Optimisers, learning-rate schedules and gradient clipping.

* SGD with momentum:  $v \leftarrow \mu v + g$,  $\theta \leftarrow \theta - \eta v$.
* Adam:  $m \leftarrow \beta_1 m + (1-\beta_1) g$,  $v \leftarrow \beta_2 v + (1-\beta_2) g^2$,
  $\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$ with bias-corrected
  $\hat m = m / (1-\beta_1^t)$, $\hat v = v / (1-\beta_2^t)$.
* AdamW: Adam plus decoupled weight decay $\theta \leftarrow \theta - \eta \lambda \theta$, applied
  to the parameters of the groups that ask for it (`decay_groups`: matrices yes, biases and
  LayerNorm parameters no).

Every optimiser takes a list of Parameters or a list of parameter groups (see `Optimizer`).
Parameters whose ``requires_grad`` is False (frozen weights under LoRA, say) are skipped.
No step reads a value back from the device: hyper-parameters are Python floats, and
`clip_grad_norm` keeps the norm on the device, so a GPU step queues its work without waiting.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from . import backend
from .nn.module import Parameter


@dataclass
class ParamGroup:
    """Parameters that share their hyper-parameters."""
    params: list            # the group's Parameters that train (requires_grad True)
    lr_scale: float         # this group's lr / the optimizer's base lr, fixed at construction
    weight_decay: float     # the group's weight decay (decoupled in AdamW, L2 in SGD)


def _check_rate(value, key: str, where: str) -> float:
    """A learning rate or decay: a real number >= 0 (bool and NaN refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{where}: {key}={value!r} is not allowed; expected a number >= 0")
    return float(value)


def _param_groups(params, lr: float, weight_decay: float, keys: tuple, owner: str) -> list[ParamGroup]:
    """Parameter groups from a list of Parameters or of dicts {"params": [...], "lr": ..., ...}."""
    items = list(params)
    if not items:
        raise ValueError(f"{owner}: got an empty parameter list")
    if all(isinstance(item, dict) for item in items):
        specs, what = items, "parameter group {}"
    elif all(isinstance(item, Parameter) for item in items):
        specs, what = [{"params": items}], "the parameter list"
    else:
        kinds = sorted({type(item).__name__ for item in items})
        raise TypeError(f"{owner}: expected a list of Parameters or a list of parameter-group dicts, got items "
                        f"of type {', '.join(kinds)} (pass model.parameters() or decay_groups(...))")
    groups, home = [], {}                   # home: id(Parameter) -> index of the group that holds it
    for i, spec in enumerate(specs):
        where = f"{owner}, {what.format(i)}"
        unknown = sorted(set(spec) - set(keys))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(keys)}")
        if "params" not in spec:
            raise ValueError(f"{where}: missing key 'params' (a list of Parameters)")
        members = [spec["params"]] if isinstance(spec["params"], Parameter) else list(spec["params"])
        if not members:
            raise ValueError(f"{where}: 'params' is empty; a group needs at least one Parameter")
        for p in members:
            if not isinstance(p, Parameter):
                raise TypeError(f"{where}: 'params' holds a {type(p).__name__}; expected Parameters")
            if id(p) in home:
                first = "earlier in the list" if home[id(p)] == i else f"in parameter group {home[id(p)]}"
                raise ValueError(f"{where}: {p!r} is already {first}; each Parameter may be listed once")
            home[id(p)] = i
        group_lr = _check_rate(spec.get("lr", lr), "lr", where)
        decay = _check_rate(spec.get("weight_decay", weight_decay), "weight_decay", where)
        groups.append(ParamGroup([p for p in members if p.requires_grad], group_lr / lr, decay))
    return groups


class Optimizer:
    """Holds parameter groups and per-parameter state; `lr` may be changed between steps.

    `params` is a list of Parameters (one group with the constructor's hyper-parameters) or a list of
    group dicts ``{"params": [...], "lr": ..., "weight_decay": ...}`` as in PyTorch; a key a group
    leaves out takes the constructor's value. A Parameter may be in one group only.

    **Learning rates.** `optimizer.lr` is the base rate, the one the schedule writes every step. A
    group keeps the ratio of its own lr to the constructor's lr: it steps with
    ``optimizer.lr * group.lr_scale``, where ``lr_scale = group_lr / lr``. So a group given twice the
    constructor's lr stays at twice the scheduled rate throughout; `group_lr(group)` gives its rate now.

    State for checkpoints: `state_arrays()` gives host copies named ``"<kind>.<i>"`` (``m.0``,
    ``v.0``, ``velocity.0``, ...) with i the position in `params`, the groups' trainable Parameters in
    order; `load_state_arrays` puts them back. Build the groups the same way to resume.
    """

    group_keys = ("params", "lr", "weight_decay")       # what a group dict may set
    state_kinds: tuple = ()                            # names of the per-parameter state lists

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        owner = type(self).__name__
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0:
            raise ValueError(f"{owner}: the learning rate must be positive, got lr={lr!r}")
        self.lr = lr
        self.weight_decay = _check_rate(weight_decay, "weight_decay", owner)
        self.param_groups = _param_groups(params, lr, self.weight_decay, self.group_keys, owner)
        self.params = [p for group in self.param_groups for p in group.params]
        self.group_of = [group for group in self.param_groups for _ in group.params]   # aligned with params
        self.t = 0

    def group_lr(self, group: ParamGroup) -> float:
        """The learning rate a group steps with now: the base lr times the group's fixed ratio."""
        return self.lr * group.lr_scale

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        raise NotImplementedError

    # state as {name: array} + scalars, for checkpoints
    def state_arrays(self) -> dict:
        return {f"{kind}.{i}": backend.to_numpy(a) for kind in self.state_kinds
                for i, a in enumerate(getattr(self, kind))}

    def load_state_arrays(self, arrays: dict) -> None:
        for key, value in arrays.items():
            kind, _, i = key.rpartition(".")
            if kind not in self.state_kinds or not i.isdigit() or int(i) >= len(self.params):
                raise ValueError(f"optimizer state {key!r}: not a state of this {type(self).__name__}; expected "
                                 f"'<kind>.<i>' with kind in {self.state_kinds} and i < {len(self.params)}")
            target = getattr(self, kind)[int(i)]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"optimizer state {key}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}")
            target[...] = backend.to_device(value, backend.device_of(target), target.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum and optional L2 weight decay
    (per group: a group's `weight_decay` is added to its gradients as weight_decay * theta)."""

    state_kinds = ("velocity",)

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = _check_rate(momentum, "momentum", "SGD")
        self.velocity = [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params]

    # --8<-- [start:sgd_step]
    def step(self) -> None:
        self.t += 1
        for p, v, group in zip(self.params, self.velocity, self.group_of):
            lr, wd = self.group_lr(group), group.weight_decay
            g = p.grad + wd * p.data if wd else p.grad
            if self.momentum:
                v *= self.momentum
                v += g                      # v <- mu v + g
                g = v
            p.data -= lr * g               # theta <- theta - lr v
    # --8<-- [end:sgd_step]


def _check_betas(betas, owner: str) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas={betas!r} is not allowed; expected a pair (beta1, beta2)")
    for key, b in zip(("beta1", "beta2"), betas):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not 0 <= b < 1:
            raise ValueError(f"{owner}: betas {key}={b!r} is not allowed; expected 0 <= {key} < 1")
    return float(betas[0]), float(betas[1])


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter). `weight_decay=0` gives plain Adam.

    Each group decays with its own `weight_decay`; given a plain list of Parameters, all of them
    decay with the constructor's. The usual choice, decay for matrices and embeddings but not for
    biases and LayerNorm gains and offsets, is `AdamW(decay_groups(model.named_parameters(), wd))`.
    """

    state_kinds = ("m", "v")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr, weight_decay)
        self.beta1, self.beta2 = _check_betas(betas, type(self).__name__)
        self.eps = _check_rate(eps, "eps", type(self).__name__)
        self.m = [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params]
        self.v = [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params]

    # --8<-- [start:adamw_step]
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # fold both bias corrections into the step size: lr * sqrt(1-b2^t) / (1-b1^t)
        correction = math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        eps_hat = self.eps * math.sqrt(1 - b2 ** self.t)
        for p, m, v, group in zip(self.params, self.m, self.v, self.group_of):
            xp = backend.get_array_module(p.data)
            lr, g = self.group_lr(group), p.grad
            if group.weight_decay:
                p.data *= 1 - lr * group.weight_decay        # decoupled decay
            m *= b1
            m += (1 - b1) * g                                # m <- b1 m + (1-b1) g
            v *= b2
            v += (1 - b2) * (g * g)                          # v <- b2 v + (1-b2) g^2
            denom = xp.sqrt(v)
            denom += eps_hat
            update = m / denom
            update *= lr * correction
            p.data -= update                                 # theta <- theta - lr m_hat/(sqrt(v_hat)+eps)
    # --8<-- [end:adamw_step]


class Adam(AdamW):
    """Adam (Kingma & Ba): AdamW without weight decay; its groups may set "params" and "lr"."""

    group_keys = ("params", "lr")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr, betas, eps, weight_decay=0.0)


# --8<-- [start:decay_groups]
def decay_groups(named_parameters, weight_decay: float) -> list[dict]:
    """The two parameter groups of the usual AdamW set-up: matrices decay, the rest does not.

    named_parameters: ``(name, Parameter)`` pairs as `model.named_parameters()` yields them, or bare
    Parameters; the rule looks only at the number of dimensions. Returns, in this order,

        [{"params": <Parameters with 2 or more dimensions: weight matrices, embeddings>,
          "weight_decay": weight_decay},
         {"params": <the others: biases, LayerNorm gains and offsets>, "weight_decay": 0.0}]

    for `AdamW(decay_groups(model.named_parameters(), 0.1), lr=...)`. Pulling a gain or a bias
    towards 0 has no regularising meaning, hence no decay there. Frozen Parameters (requires_grad
    False) are left out, and so is a group that would be empty (a model without biases, say).
    """
    decay, no_decay = [], []
    for item in named_parameters:
        p = item[1] if isinstance(item, tuple) else item
        if p.requires_grad:
            (decay if p.data.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
# --8<-- [end:decay_groups]


# -- schedules ----------------------------------------------------------------------------------
# --8<-- [start:schedules]
def warmup_cosine(step: int, max_lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up from 0 to max_lr over `warmup` steps, then cosine decay to min_lr at `total`."""
    if warmup > 0 and step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def noam(step: int, d_model: int, warmup: int = 4000, factor: float = 1.0) -> float:
    """The original Transformer's schedule: factor * d_model^-0.5 * min(t^-0.5, t * warmup^-1.5)."""
    t = step + 1
    return factor * d_model ** -0.5 * min(t ** -0.5, t * warmup ** -1.5)
# --8<-- [end:schedules]


# --8<-- [start:clip_grad_norm]
def clip_grad_norm(params, max_norm: float):
    r"""Scale all gradients so that their global L2 norm is at most max_norm; return the norm before.

    $\lVert g\rVert = \sqrt{\sum_p \sum_i g_{p,i}^2}$, then
    $g \leftarrow g \cdot \min\left(1, c / (\lVert g\rVert + 10^{-6})\right)$ with $c$ = max_norm
    (max_norm <= 0: measure only). The factor is computed and applied on the device, without
    reading the norm back, so a GPU step does not wait here: the norm is returned as a 0-d device
    array (a float64 NumPy scalar on the CPU). Call `float()` on it where you log or test it: on a
    GPU that is a host sync, so do it when logging, not every step.
    """
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("clip_grad_norm: no parameter with requires_grad")
    xp = backend.get_array_module(params[0].grad)
    squares = xp.stack([xp.vdot(p.grad.ravel(), p.grad.ravel()) for p in params])   # (n_params,)
    norm = xp.sqrt(squares.astype(xp.float64).sum())                                 # (), on the device
    if max_norm > 0:
        scale = xp.minimum(1.0, max_norm / (norm + 1e-6)).astype(params[0].grad.dtype)
        for p in params:
            p.grad *= scale
    return norm
# --8<-- [end:clip_grad_norm]


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
