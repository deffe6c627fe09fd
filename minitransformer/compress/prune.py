r"""Pruning: zero the least important weights and keep them at zero through fine-tuning.

*Magnitude pruning* with sparsity $s \in [0, 1)$ removes the $\lfloor s N \rfloor$ weights of smallest
$|w|$, either in each layer separately or over all chosen layers at once (global: layers with many
small weights lose more). A :class:`PruningMask` remembers which entries were removed and is applied
after every optimizer step, $w \leftarrow w \odot m$, so fine-tuning cannot revive them.

*Gradual pruning* (Zhu & Gupta, 2017) raises the sparsity along a cubic schedule from $s_i$ at step
$t_0$ to $s_f$ at step $t_0 + \Delta$:

$$s_t = s_f + (s_i - s_f)\Big(1 - \frac{t - t_0}{\Delta}\Big)^3,$$

pruning fast while many redundant weights remain and slowly near the end.

*Structured head pruning* removes whole attention heads. Head $h$ of a layer reaches the output
only through rows $hD \ldots (h+1)D - 1$ of the output projection $W_O$ (input $o = [o_1 \ldots o_H]$,
the concatenated head outputs). Two importance scores, both read from the projection after a
forward (and backward) pass: the mean norm of the head output, $\mathbb{E}\lVert o_h \rVert$, or the
gradient score of Michel et al. (2019), $I_h = |\sum_{n} o_{h,n} \cdot \partial L / \partial o_{h,n}|$,
which equals $|\sum_{\text{rows of } h} W_O \odot \partial L/\partial W_O|$ since $dW_O = o^\top dy$ and
$do = dy\, W_O^\top$. A pruned head has its rows of $W_O$ and its Q, K, V columns masked to zero.
"""
from __future__ import annotations

from .. import backend
from ..nn.linear import Linear
from ..nn.module import Module
from .surgery import DEFAULT_TARGETS, matches, slots


def check_sparsity(sparsity, where: str = "sparsity") -> float:
    """Sparsity must be a number in [0, 1): 1 would remove every weight."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{where}: sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)


# --8<-- [start:magnitude_masks]
def magnitude_masks(weights: dict, sparsity: float, scope: str = "layer") -> dict:
    """Boolean keep-masks (True = kept) removing the floor(s * N) smallest |w|, counted per array
    (scope="layer") or over all arrays together (scope="global")."""
    sparsity = check_sparsity(sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    masks = {}
    if scope == "layer":
        for name, w in weights.items():
            xp = backend.get_array_module(w)
            order = xp.argsort(xp.abs(w).ravel(), kind="stable")   # (N,) smallest |w| first
            keep = xp.ones(w.size, dtype=bool)
            keep[order[:int(sparsity * w.size)]] = False
            masks[name] = keep.reshape(w.shape)                       # (N,) -> w's shape
        return masks
    names = list(weights)
    xp = backend.get_array_module(weights[names[0]])
    flat = xp.concatenate([xp.abs(weights[n]).ravel() for n in names])   # (sum N,)
    order = xp.argsort(flat, kind="stable")
    keep = xp.ones(flat.size, dtype=bool)
    keep[order[:int(sparsity * flat.size)]] = False
    start = 0
    for n in names:
        size = weights[n].size
        masks[n] = keep[start:start + size].reshape(weights[n].shape)  # (N_n,) -> w's shape
        start += size
    return masks
# --8<-- [end:magnitude_masks]


# --8<-- [start:cubic_schedule]
def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's gradual schedule: `initial` before `begin`, `final` after `end`, cubic between."""
    check_sparsity(final, "cubic_sparsity(final)")
    check_sparsity(initial, "cubic_sparsity(initial)")
    if end <= begin:
        raise ValueError(f"cubic_sparsity: expected end > begin, got begin={begin}, end={end}")
    t = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - t) ** 3
# --8<-- [end:cubic_schedule]


def _target_weights(model: Module, targets) -> dict:
    targets = [targets] if isinstance(targets, str) else list(targets)
    found = {f"{n}.weight": c.weight for n, _, _, c in slots(model)
             if isinstance(c, Linear) and matches(n, targets)}
    if not found:
        raise ValueError(f"no Linear matches targets {targets}")
    return found


# --8<-- [start:pruning_mask]
class PruningMask:
    """Keep-masks by parameter name. Call `apply(model)` after every optimizer step (the training
    loop's hook) so pruned weights stay exactly zero during fine-tuning."""

    def __init__(self, masks: dict):
        self.masks = dict(masks)

    @classmethod
    def magnitude(cls, model: Module, sparsity: float, targets=DEFAULT_TARGETS,
                  scope: str = "layer") -> "PruningMask":
        """Masks removing the smallest weights of the Linears named by `targets`."""
        params = _target_weights(model, targets)
        return cls(magnitude_masks({n: p.data for n, p in params.items()}, sparsity, scope))

    def apply(self, model: Module) -> None:
        """w <- w * mask for every masked parameter (in place); gradients of pruned entries too."""
        params = dict(model.named_parameters())
        missing = sorted(set(self.masks) - set(params))
        if missing:
            raise ValueError(f"PruningMask: the model has no parameters {missing[:4]}")
        for name, mask in self.masks.items():
            p = params[name]
            p.data *= mask
            p.grad *= mask

    __call__ = apply

    def combine(self, other: "PruningMask") -> "PruningMask":
        """Entries kept by both masks (e.g. head pruning on top of magnitude pruning)."""
        out = dict(self.masks)
        for n, m in other.masks.items():
            out[n] = out[n] & m if n in out else m
        return PruningMask(out)

    def sparsity(self) -> float:
        """Fraction of the masked entries that are pruned."""
        total = sum(m.size for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / max(total, 1)
# --8<-- [end:pruning_mask]


# --8<-- [start:gradual]
class GradualPruning:
    """A training-loop hook for gradual magnitude pruning: call it after every optimizer step. Every
    `every` steps it raises the sparsity along `cubic_sparsity` and recomputes the masks from the
    current weights (pruned weights are zero, so they stay pruned); after every step it applies the
    current mask. `mask` holds the latest PruningMask."""

    def __init__(self, final: float, begin: int, end: int, targets=DEFAULT_TARGETS, scope: str = "layer",
                 every: int = 10, initial: float = 0.0):
        cubic_sparsity(begin, final, begin, end, initial)          # validates the arguments
        self.final, self.begin, self.end, self.initial = final, begin, end, initial
        self.targets, self.scope, self.every = targets, scope, max(1, every)
        self.step, self.mask = 0, None

    def __call__(self, model: Module) -> None:
        self.step += 1
        if self.mask is None or self.step % self.every == 0 or self.step == self.end:
            s = cubic_sparsity(self.step, self.final, self.begin, self.end, self.initial)
            self.mask = PruningMask.magnitude(model, s, self.targets, self.scope)
        self.mask.apply(model)
# --8<-- [end:gradual]


def prune_model(model: Module, sparsity: float, targets=DEFAULT_TARGETS, scope: str = "layer") -> PruningMask:
    """One-shot magnitude pruning in place; returns the mask to re-apply during fine-tuning."""
    mask = PruningMask.magnitude(model, sparsity, targets, scope)
    mask.apply(model)
    return mask


# -- structured: attention heads --------------------------------------------------------------

def _attention_pairs(model: Module, attn: str = "attn"):
    """(prefix, qkv Linear, proj Linear) for every attention block named '*.{attn}'."""
    modules = {n: c for n, _, _, c in slots(model)}
    pairs = []
    for name, child in modules.items():
        if name == attn or name.endswith("." + attn):
            qkv, proj = getattr(child, "qkv", None), getattr(child, "proj", None)
            if isinstance(qkv, Linear) and isinstance(proj, Linear):
                pairs.append((name, qkv, proj))
    if not pairs:
        raise ValueError(f"no attention block named '*.{attn}' with Linear qkv and proj in the model")
    return pairs


# --8<-- [start:head_importance]
def head_importance(model: Module, n_head: int, method: str = "gradient", attn: str = "attn") -> dict:
    """Importance of each head, {attention name: array (H,)}, read from each output projection.

    method="output": mean norm of the head's output over the last forward (needs the projection's
    cache); method="gradient": |sum over the head's rows of W_O * dW_O| (Michel et al.), after a
    backward pass (needs the accumulated gradient)."""
    if method not in ("output", "gradient"):
        raise ValueError(f"head_importance: method must be 'output' or 'gradient', got {method!r}")
    scores = {}
    for name, _, proj in _attention_pairs(model, attn):
        C = proj.in_features
        if C % n_head:
            raise ValueError(f"{name}: width {C} is not divisible by n_head={n_head}")
        D = C // n_head
        if method == "output":
            if proj.cache is None:
                raise ValueError(f"{name}.proj has no cached forward: run model.forward first")
            o = proj.cache.x.reshape(-1, n_head, D)                      # (N, C) -> (N, H, D)
            xp = backend.get_array_module(o)
            scores[name] = xp.sqrt((o ** 2).sum(axis=2)).mean(axis=0)     # (N, H, D) -> (H,)
        else:
            w, g = proj.weight.data, proj.weight.grad
            xp = backend.get_array_module(w)
            scores[name] = xp.abs((w * g).reshape(n_head, D, -1).sum(axis=(1, 2)))  # (C, C) -> (H, D, C) -> (H,)
    return scores
# --8<-- [end:head_importance]


def head_mask(model: Module, n_head: int, scores: dict, fraction: float, attn: str = "attn") -> PruningMask:
    """Masks removing the `fraction` of heads with the lowest importance, ranked over all layers
    after normalising each layer's scores to unit L2 norm (Michel et al.); each layer keeps at least
    one head. Masks cover the head's Q, K, V columns (and biases) of qkv and its rows of proj."""
    check_sparsity(fraction, "head_mask(fraction)")
    pairs = _attention_pairs(model, attn)
    ranked = []
    for name, _, _ in pairs:
        s = backend.to_numpy(scores[name]).astype(float)
        s = s / max(float((s ** 2).sum()) ** 0.5, 1e-30)
        ranked += [(float(v), name, h) for h, v in enumerate(s)]
    ranked.sort()
    n_prune = int(fraction * len(ranked))
    pruned = {name: [] for name, _, _ in pairs}
    for _, name, h in ranked:
        if n_prune == 0:
            break
        if len(pruned[name]) < n_head - 1:
            pruned[name].append(h)
            n_prune -= 1
    masks = {}
    for name, qkv, proj in pairs:
        C = proj.in_features
        D = C // n_head
        xp = backend.get_array_module(proj.weight.data)
        keep_head = xp.ones(C, dtype=bool)                                  # (C,) one flag per channel
        for h in pruned[name]:
            keep_head[h * D:(h + 1) * D] = False
        keep_qkv = xp.concatenate([keep_head] * 3)                           # (3C,) q | k | v
        masks[f"{name}.qkv.weight"] = xp.broadcast_to(keep_qkv, qkv.weight.shape).copy()  # (C, 3C)
        if qkv.bias is not None:
            masks[f"{name}.qkv.bias"] = keep_qkv
        masks[f"{name}.proj.weight"] = xp.broadcast_to(keep_head[:, None], proj.weight.shape).copy()  # (C, C)
    mask = PruningMask(masks)
    mask.pruned_heads = {k: sorted(v) for k, v in pruned.items()}
    return mask
