r"""Truncated SVD compression of a trained model's weight matrices.

For $W = U \Sigma V^\top$ with $\sigma_1 \ge \sigma_2 \ge \dots$, the rank-$K$ truncation
$W_K = U_K \Sigma_K V_K^\top$ is the best rank-$K$ approximation in both norms (Eckart–Young–Mirsky):

$$\lVert W - W_K \rVert_F = \sqrt{\textstyle\sum_{i>K} \sigma_i^2}, \qquad
  \lVert W - W_K \rVert_2 = \sigma_{K+1}.$$

We store it as two factors $A = U_K \Sigma_K^{1/2}$ and $B = \Sigma_K^{1/2} V_K^\top$ (balanced, so
both train at similar scales when fine-tuned) inside a :class:`~minitransformer.compress.lowrank.LowRankLinear`.
The rank of each matrix is chosen by a fixed $K$, by an energy threshold (the smallest $K$ keeping
a fraction $e$ of $\sum \sigma_i^2$) or by a parameter budget shared by all chosen matrices.
"""
from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass

from .. import backend
from ..nn.linear import Linear
from ..nn.module import Module
from ..nn.lowrank import LowRankLinear, check_rank
from .surgery import DEFAULT_TARGETS, matches, replace_linears, slots


# --8<-- [start:truncated_factors]
def truncated_factors(w, k: int):
    """A (m, k), B (k, n) with A @ B the best rank-k approximation of w (m, n)."""
    xp = backend.get_array_module(w)
    u, s, vt = xp.linalg.svd(w, full_matrices=False)  # (m,r), (r,), (r,n) with r = min(m,n)
    root = xp.sqrt(s[:k])                              # (k,)
    a = u[:, :k] * root                                # (m, k) * (k,) -> (m, k)
    b = root[:, None] * vt[:k]                         # (k, 1) * (k, n) -> (k, n)
    return a, b


def eckart_young_error(sigma, k: int) -> tuple[float, float]:
    """(Frobenius, spectral) error of the best rank-k approximation, from the singular values."""
    tail = sigma[k:]
    fro = float((tail ** 2).sum() ** 0.5)
    spec = float(tail[0]) if tail.size else 0.0
    return fro, spec
# --8<-- [end:truncated_factors]


def from_linear(linear: Linear, rank: int) -> LowRankLinear:
    """The rank-K layer closest to `linear` in Frobenius and spectral norm (Eckart–Young):
    A = U_K sqrt(S_K), B = sqrt(S_K) V_K^T, bias copied. Same device and dtype as `linear`."""
    w = linear.weight.data
    check_rank(rank, *w.shape, "from_linear")
    a, b = truncated_factors(w, rank)
    layer = LowRankLinear(w.shape[0], w.shape[1], rank, bias=linear.bias is not None)
    layer.to(linear.weight.device, w.dtype)
    layer.a.data, layer.b.data = a.astype(w.dtype), b.astype(w.dtype)
    if linear.bias is not None:
        layer.bias.data = linear.bias.data.astype(w.dtype)   # astype copies
    return layer


def measured_error(w, approx) -> tuple[float, float]:
    """(Frobenius, spectral) norm of w - approx, measured directly."""
    xp = backend.get_array_module(w)
    e = w - approx
    return float(xp.linalg.norm(e)), float(xp.linalg.svd(e, compute_uv=False)[0])


# --8<-- [start:choose_rank]
def rank_for_energy(sigma, energy: float) -> int:
    """Smallest k with sum_{i<=k} sigma_i^2 >= energy * sum_i sigma_i^2."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    s2 = [float(v) ** 2 for v in backend.to_numpy(sigma)]
    total, kept = sum(s2), 0.0
    for k, v in enumerate(s2, start=1):
        kept += v
        if kept >= energy * total * (1 - 1e-12):      # tolerance: energy=1 must reach the last k
            return k
    return len(s2)


def ranks_for_budget(spectra: dict, budget: float) -> dict[str, int]:
    """Share a parameter budget among matrices: `spectra` maps name -> (sigma, m, n); `budget` is a
    fraction in (0, 1] of their dense parameter count. Every matrix keeps rank >= 1; then, greedily,
    the next singular direction with the most energy per parameter, sigma^2 / (m + n), is added
    while it fits. (Each direction costs m + n numbers, and sigma is sorted, so this greedy order
    removes the most squared Frobenius error per parameter spent.)"""
    if not 0.0 < budget <= 1.0:
        raise ValueError(f"budget must be a fraction of the dense parameters in (0, 1], got {budget}")
    dense = sum(m * n for _, m, n in spectra.values())
    left = budget * dense - sum(m + n for _, m, n in spectra.values())
    if left < 0:
        raise ValueError(f"budget {budget} is below rank 1 for every matrix "
                         f"({sum(m + n for _, m, n in spectra.values())} of {dense} parameters)")
    ranks = {name: 1 for name in spectra}
    sig = {name: [float(v) for v in backend.to_numpy(s)] for name, (s, _, _) in spectra.items()}
    heap = [(-sig[name][1] ** 2 / (m + n), name) for name, (_, m, n) in spectra.items() if len(sig[name]) > 1]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        _, m, n = spectra[name]
        if m + n > left:
            continue                                   # this matrix's next direction does not fit
        left -= m + n
        ranks[name] += 1
        k = ranks[name]
        if k < len(sig[name]):
            heapq.heappush(heap, (-sig[name][k] ** 2 / (m + n), name))
    return ranks
# --8<-- [end:choose_rank]


@dataclass
class SVDRow:
    """One compressed matrix: its rank, sizes, and predicted vs measured errors."""
    name: str
    shape: tuple
    rank: int
    params_before: int
    params_after: int
    energy_kept: float           # sum_{i<=k} sigma^2 / sum sigma^2
    fro_predicted: float         # sqrt(sum_{i>k} sigma_i^2)
    fro_measured: float
    spec_predicted: float        # sigma_{k+1}
    spec_measured: float
    rel_fro: float               # fro_measured / ||W||_F

    def as_dict(self) -> dict:
        return asdict(self)


# --8<-- [start:svd_compress]
def svd_compress(model: Module, targets=DEFAULT_TARGETS, *, rank: int | None = None,
                 energy: float | None = None, budget: float | None = None,
                 measure: bool = True) -> list[SVDRow]:
    """Replace the Linears named by `targets` with truncated-SVD LowRankLinears, in place.

    Give exactly one of rank (fixed K), energy (fraction of sum sigma^2 kept, per matrix) or budget
    (fraction of the chosen matrices' dense parameters, shared greedily). Returns one SVDRow per
    matrix with the Eckart–Young errors and, if `measure`, the errors measured on the factors.
    """
    given = [k for k, v in (("rank", rank), ("energy", energy), ("budget", budget)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"svd_compress: give exactly one of rank, energy, budget; got {given or 'none'}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    linears = {n: c for n, _, _, c in slots(model) if isinstance(c, Linear) and matches(n, targets)}
    if not linears:
        raise ValueError(f"svd_compress: no Linear matches targets {targets}")
    spectra = {}
    for name, lin in linears.items():
        xp = backend.get_array_module(lin.weight.data)
        spectra[name] = (xp.linalg.svd(lin.weight.data, compute_uv=False), *lin.weight.shape)
        if rank is not None:
            check_rank(rank, *lin.weight.shape, f"svd_compress({name})")
    if budget is not None:
        ranks = ranks_for_budget(spectra, budget)
    elif energy is not None:
        ranks = {name: rank_for_energy(s, energy) for name, (s, _, _) in spectra.items()}
    else:
        ranks = {name: rank for name in spectra}

    rows = []

    def make(name, linear):
        k = ranks[name]
        layer = from_linear(linear, k)
        sigma, m, n = spectra[name]
        fro, spec = eckart_young_error(sigma, k)
        w = linear.weight.data
        fro_m, spec_m = measured_error(w, layer.dense_weight()) if measure else (float("nan"),) * 2
        total = float((sigma ** 2).sum())
        rows.append(SVDRow(name, (m, n), k, m * n, k * (m + n), float((sigma[:k] ** 2).sum()) / total,
                           fro, fro_m, spec, spec_m, fro_m / total ** 0.5))
        return layer

    replace_linears(model, targets, make)
    return rows
# --8<-- [end:svd_compress]


def svd_table(rows: list[SVDRow]) -> str:
    """A Markdown table of svd_compress's report."""
    out = ["| matrix | shape | rank | params | energy kept | ‖E‖_F Eckart–Young | ‖E‖_F measured "
           "| ‖E‖₂ = σ_{k+1} | ‖E‖₂ measured |", "|" + " --- |" * 9]
    for r in rows:
        out.append(f"| {r.name} | {r.shape[0]}×{r.shape[1]} | {r.rank} | {r.params_before} → "
                   f"{r.params_after} | {r.energy_kept:.3f} | {r.fro_predicted:.4g} | {r.fro_measured:.4g} "
                   f"| {r.spec_predicted:.4g} | {r.spec_measured:.4g} |")
    return "\n".join(out)
