"""Chapter 1 figure: how strongly the last output of a sequence depends on an input k steps back,
for a simple tanh RNN and for one layer of causal self-attention (NumPy, float64, random weights),
plus the wall time of a forward pass over growing sequence lengths.

Writes docs/figures/why_attention.png and docs/figures/tables/why_attention.md.
"""
from __future__ import annotations

import os
import time

# One BLAS thread and CPU time, so that a busy shared machine does not distort the timings.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import pyplot, save, write_table  # noqa: E402

T, C, SEEDS = 128, 32, 8


def rnn_sensitivity(rng) -> np.ndarray:
    """||d h_T / d x_{T-k}||_F for k = 0..T-1, for h_t = tanh(h_{t-1} W + x_t U)."""
    w = rng.standard_normal((C, C)) / np.sqrt(C)       # standard 1/sqrt(C) initialisation
    u = rng.standard_normal((C, C)) / np.sqrt(C)
    x = rng.standard_normal((T, C))
    h, hs = np.zeros(C), []
    for t in range(T):                                  # the sequential loop attention removes
        h = np.tanh(h @ w + x[t] @ u)
        hs.append(h)
    # d h_T / d h_t is a product of Jacobians diag(1 - h^2) W^T, accumulated from the end
    out = np.empty(T)
    j = np.eye(C)                                       # d h_T / d h_T
    for k in range(T):
        t = T - 1 - k
        dpre = j * (1 - hs[t] ** 2)                     # d h_T / d pre_t   (C, C)
        out[k] = np.linalg.norm(dpre @ u.T)             # d h_T / d x_t = d h_T / d pre_t  U^T
        j = dpre @ w.T                                  # d h_T / d h_{t-1}
    return out


def attention_last(x, wq, wk, wv):
    """Output of the last query of causal self-attention (it may see every position)."""
    q, k, v = x[-1] @ wq, x @ wk, x @ wv                # (C,), (T, C), (T, C)
    s = k @ q / np.sqrt(C)                              # (T,)
    p = np.exp(s - s.max())
    return (p / p.sum()) @ v                            # (C,)


def attention_sensitivity(rng) -> np.ndarray:
    """||d o_T / d x_{T-k}||_F by central differences (exact enough in float64)."""
    wq, wk, wv = (rng.standard_normal((C, C)) / np.sqrt(C) for _ in range(3))
    x = rng.standard_normal((T, C))
    eps, out = 1e-6, np.empty(T)
    for k in range(T):
        t = T - 1 - k
        jac = np.empty((C, C))
        for c in range(C):
            xp, xm = x.copy(), x.copy()
            xp[t, c] += eps
            xm[t, c] -= eps
            jac[c] = (attention_last(xp, wq, wk, wv) - attention_last(xm, wq, wk, wv)) / (2 * eps)
        out[k] = np.linalg.norm(jac)
    return out


def timings(lengths, batch=16):
    """Seconds for one forward over a batch: an RNN (T dependent steps) vs attention (a few matmuls)."""
    rng = np.random.default_rng(0)
    w, u = rng.standard_normal((2, C * 4, C * 4)) / np.sqrt(C * 4)
    rows = []
    for n in lengths:
        x = rng.standard_normal((batch, n, C * 4))
        best = {}
        for name in ("rnn", "attention"):
            times = []
            for _ in range(3):
                t0 = time.process_time()
                if name == "rnn":
                    h = np.zeros((batch, C * 4))
                    xu = x @ u                           # the input part can be batched ...
                    for t in range(n):                   # ... the recurrence cannot
                        h = np.tanh(h @ w + xu[:, t])
                else:
                    q, k, v = x @ w, x @ u, x
                    s = q @ k.transpose(0, 2, 1) / np.sqrt(C * 4)
                    p = np.exp(s - s.max(-1, keepdims=True))
                    (p / p.sum(-1, keepdims=True)) @ v
                times.append(time.process_time() - t0)
            best[name] = min(times)
        rows.append((n, best["rnn"], best["attention"]))
    return rows


def main():
    rng = np.random.default_rng(0)
    rnn = np.mean([rnn_sensitivity(rng) for _ in range(SEEDS)], axis=0)
    att = np.mean([attention_sensitivity(rng) for _ in range(SEEDS)], axis=0)
    lengths = [16, 32, 64, 128, 256, 512]
    rows = timings(lengths)

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    ks = np.arange(T)
    a.semilogy(ks, rnn, label="tanh RNN: $\\|\\partial h_T/\\partial x_{T-k}\\|$")
    a.semilogy(ks, att, label="self-attention: $\\|\\partial o_T/\\partial x_{T-k}\\|$")
    a.set_xlabel("distance k (tokens back)")
    a.set_ylabel("Jacobian norm (mean of 8 seeds)")
    a.set_title("How much does a token k steps back matter?")
    a.legend(fontsize=8)
    n, tr, ta = zip(*rows)
    b.loglog(n, np.array(tr) * 1e3, "o-", label="RNN: T dependent steps")
    b.loglog(n, np.array(ta) * 1e3, "s-", label="attention: one parallel step")
    b.set_xscale("log", base=2)
    b.set_xticks(lengths, [str(v) for v in lengths])
    b.minorticks_off()
    b.set_xlabel("sequence length T")
    b.set_ylabel("forward time (ms), batch 16, width 128")
    b.set_title("Forward time on one CPU thread (NumPy)")
    b.legend(fontsize=8)
    save(fig, "why_attention")

    write_table("why_attention",
                ["distance k", "RNN ‖∂h_T/∂x_{T−k}‖", "attention ‖∂o_T/∂x_{T−k}‖"],
                [[k, f"{rnn[k]:.2e}", f"{att[k]:.2e}"] for k in (0, 1, 4, 16, 64, 127)],
                note="Random weights with the usual 1/√C initialisation, width C = 32, T = 128, "
                     "mean over 8 seeds; produced by `docs/figures/scripts/why_attention.py`.")
    write_table("why_attention_time",
                ["T", "RNN forward (ms)", "attention forward (ms)"],
                [[n_, f"{r * 1e3:.2f}", f"{s * 1e3:.2f}"] for n_, r, s in rows],
                note="Best of 3 runs, CPU time on one BLAS thread; batch 16, width 128.")


if __name__ == "__main__":
    main()
