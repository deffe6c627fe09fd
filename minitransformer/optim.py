r"""Optimisers, learning-rate schedules and gradient clipping.

* SGD with momentum:  $v \leftarrow \mu v + g$,  $\theta \leftarrow \theta - \eta v$.
* Adam:  $m \leftarrow \beta_1 m + (1-\beta_1) g$,  $v \leftarrow \beta_2 v + (1-\beta_2) g^2$,
  $\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$ with bias-corrected
  $\hat m = m / (1-\beta_1^t)$, $\hat v = v / (1-\beta_2^t)$.
* AdamW: Adam plus decoupled weight decay $\theta \leftarrow \theta - \eta \lambda \theta$, applied
  only to matrices (biases and LayerNorm gains are not decayed).

Parameters whose ``requires_grad`` is False (frozen weights under LoRA, say) are skipped.
"""
from __future__ import annotations

import math

from . import backend
from .nn.module import Parameter


class Optimizer:
    """Holds a list of Parameters and per-parameter state; `lr` may be changed between steps."""

    def __init__(self, params, lr: float):
        params = [p for p in params if isinstance(p, Parameter)]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.params = [p for p in params if p.requires_grad]
        self.lr = lr
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        raise NotImplementedError

    # state as {name: array} + scalars, for checkpoints
    def state_arrays(self) -> dict:
        return {}

    def load_state_arrays(self, arrays: dict) -> None:
        for key, value in arrays.items():
            kind, i = key.rsplit(".", 1)
            target = getattr(self, kind)[int(i)]
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(f"optimizer state {key}: expected shape {tuple(target.shape)}, got {tuple(value.shape)}")
            target[...] = backend.to_device(value, backend.device_of(target), target.dtype)

    def _named_state(self, kind: str, arrays: list) -> dict:
        return {f"{kind}.{i}": backend.to_numpy(a) for i, a in enumerate(arrays)}


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum and optional L2 weight decay."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = [backend.get_array_module(p.data).zeros_like(p.data) for p in self.params]

    # --8<-- [start:sgd_step]
    def step(self) -> None:
        self.t += 1
        for p, v in zip(self.params, self.velocity):
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                v *= self.momentum
                v += g                      # v <- mu v + g
                g = v
            p.data -= self.lr * g          # theta <- theta - lr v
    # --8<-- [end:sgd_step]

    def state_arrays(self) -> dict:
        return self._named_state("velocity", self.velocity)


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter). `weight_decay=0` gives plain Adam.

    Decay applies to parameters with two or more dimensions (weight matrices, embeddings);
    biases and LayerNorm gains/biases are never decayed.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        xp = backend.get_array_module(self.params[0].data)
        self.m = [xp.zeros_like(p.data) for p in self.params]
        self.v = [xp.zeros_like(p.data) for p in self.params]
        self.decay = [p.data.ndim >= 2 for p in self.params]

    # --8<-- [start:adamw_step]
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        # fold both bias corrections into one step size: lr * sqrt(1-b2^t) / (1-b1^t)
        step_size = self.lr * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        eps_hat = self.eps * math.sqrt(1 - b2 ** self.t)
        for p, m, v, decay in zip(self.params, self.m, self.v, self.decay):
            xp = backend.get_array_module(p.data)
            g = p.grad
            if decay and self.weight_decay:
                p.data *= 1 - self.lr * self.weight_decay   # decoupled decay
            m *= b1
            m += (1 - b1) * g                                # m <- b1 m + (1-b1) g
            v *= b2
            v += (1 - b2) * (g * g)                          # v <- b2 v + (1-b2) g^2
            denom = xp.sqrt(v)
            denom += eps_hat
            update = m / denom
            update *= step_size
            p.data -= update                                 # theta <- theta - lr m_hat/(sqrt(v_hat)+eps)
    # --8<-- [end:adamw_step]

    def state_arrays(self) -> dict:
        return {**self._named_state("m", self.m), **self._named_state("v", self.v)}


class Adam(AdamW):
    """Adam (Kingma & Ba): AdamW without weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr, betas, eps, weight_decay=0.0)


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
def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm; return the norm before."""
    params = [p for p in params if p.requires_grad]
    xp = backend.get_array_module(params[0].grad)
    total = math.sqrt(sum(float(xp.vdot(p.grad.ravel(), p.grad.ravel())) for p in params))
    if max_norm > 0 and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            p.grad *= scale
    return total
# --8<-- [end:clip_grad_norm]


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
