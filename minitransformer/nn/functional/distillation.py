r"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher's softened outputs.

With teacher logits $z^t$, student logits $z^s$, temperature $T$, $p^t = \operatorname{softmax}(z^t/T)$,
$p^s_T = \operatorname{softmax}(z^s/T)$ and weights $w_n = 1/|\mathcal{K}|$ on the counted rows:

$$L = \alpha\, T^2 \sum_n w_n \operatorname{KL}(p^t_n \,\|\, p^s_{T,n}) + (1 - \alpha)\, \mathrm{CE}(z^s, y).$$

Backward with respect to the student logits (the teacher is fixed):

$$\frac{\partial L}{\partial z^s_n} = \alpha\, T\, w_n \big(p^s_{T,n} - p^t_n\big)
   + (1 - \alpha)\, w_n \big(\operatorname{softmax}(z^s_n) - \mathrm{onehot}(y_n)\big).$$

The soft term's gradient carries $1/T$ from the chain rule through $z^s/T$ and shrinks like
$1/T$ again as both softmaxes flatten; the $T^2$ factor cancels that, so changing $T$ does not
change the balance set by $\alpha$.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from ... import backend
from ...gradcheck import check_functional, register
from .cross_entropy import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from .softmax import log_softmax_forward


class DistillCache(NamedTuple):
    ps_t: Any            # (N, V) student softmax at temperature T
    pt_t: Any            # (N, V) teacher softmax at temperature T
    ce: Any              # the cross-entropy's cache (its softmax, targets and row weights)
    temperature: float
    alpha: float
    in_shape: tuple


def check_distill_args(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation alpha must lie in [0, 1], got {alpha}")


# --8<-- [start:distill]
def distillation_loss_forward(student_logits, teacher_logits, targets, temperature: float = 2.0,
                              alpha: float = 0.5, ignore_index: int = IGNORE_INDEX):
    """alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE(z_s, y), averaged over the
    rows whose target is not ignore_index. Logits (..., V), targets (...). Returns (loss, cache)."""
    check_distill_args(temperature, alpha)
    if tuple(teacher_logits.shape) != tuple(student_logits.shape):
        raise ValueError(f"distillation: teacher logits of shape {tuple(teacher_logits.shape)} do not match "
                         f"the student's {tuple(student_logits.shape)} (same batch, positions and vocabulary)")
    if tuple(targets.shape) != tuple(student_logits.shape[:-1]):
        raise ValueError(f"distillation: targets of shape {tuple(targets.shape)}, expected "
                         f"{tuple(student_logits.shape[:-1])} (the logits' shape without the vocabulary axis)")
    xp = backend.get_array_module(student_logits)
    V = student_logits.shape[-1]
    zs = student_logits.reshape(-1, V)                 # (..., V) -> (N, V)
    zt = teacher_logits.reshape(-1, V)                 # (..., V) -> (N, V)
    ce, ce_cache = cross_entropy_forward(zs, targets.reshape(-1), ignore_index=ignore_index)  # (...) -> (N,)
    log_ps, _ = log_softmax_forward(zs / temperature)  # (N, V) log p^s_T
    log_pt, _ = log_softmax_forward(zt / temperature)  # (N, V) log p^t (finite even where p^t = 0)
    pt = xp.exp(log_pt)                                # (N, V)
    kl = (pt * (log_pt - log_ps)).sum(axis=1)          # (N, V) -> (N,)
    loss = alpha * temperature ** 2 * (kl * ce_cache.weight).sum() + (1 - alpha) * ce
    return loss, DistillCache(xp.exp(log_ps), pt, ce_cache, temperature, alpha, student_logits.shape)


def distillation_loss_backward(dloss, cache: DistillCache):
    """Returns (dstudent_logits, None, None): the teacher and the targets get no gradient."""
    xp = backend.get_array_module(cache.ps_t)
    T, alpha = cache.temperature, cache.alpha
    w = cache.ce.weight * xp.asarray(dloss, dtype=cache.ps_t.dtype)    # (N,) dL/d(row term)
    # fwd: soft = T^2 sum_n w_n KL(p^t_n || softmax(z^s_n / T))
    #  =>  dz^s_n = T^2 * (1/T) * w_n (p^s_T - p^t) = T w_n (p^s_T - p^t)
    dz = (alpha * T) * (cache.ps_t - cache.pt_t) * w[:, None]           # (N, V)
    # fwd: hard = CE(z^s, y)  =>  its own backward (p - onehot) w_n
    dce, _ = cross_entropy_backward(dloss, cache.ce)                    # (N, V)
    dz += (1 - alpha) * dce
    return dz.reshape(cache.in_shape), None, None                       # (N, V) -> (..., V)
# --8<-- [end:distill]


@register("nn.distillation_loss")
def _gradcheck_distill(device: str):
    import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp
    rng = np.random.default_rng(11)
    zs = backend.to_device(rng.standard_normal((2, 3, 7)) * 2, device)
    zt = backend.to_device(rng.standard_normal((2, 3, 7)) * 2, device)
    y = backend.to_device(np.array([[1, 6, IGNORE_INDEX], [0, 3, 2]]), device)  # one ignored position
    return check_functional("nn.distillation_loss",
                            lambda a, b, c: distillation_loss_forward(a, b, c, 2.5, 0.3),
                            distillation_loss_backward, [zs, zt, y], wrt=[0])
