"""Chapter 4 figure and tables, from the real functional pairs.

1. Softmax and cross-entropy at growing logit scales in float32: a naive implementation
   (exp without the max shift, log of the softmax) against the package's, and the package's
   cross-entropy gradient against the closed form p - onehot.
2. The embedding backward's scatter-add strategies timed against the vocabulary size: the real
   `embedding_backward` forced down its one-hot matrix product and its sorted `add.reduceat` branch,
   with NumPy's `add.at` for reference. This is where ONEHOT_MAX_VOCAB comes from.

Writes docs/figures/tables/softmax_stability.md, docs/figures/embedding_backward.png and
docs/figures/tables/embedding_backward.md.
"""
from __future__ import annotations

import os
import time

# One BLAS thread: the timings compare two algorithms, and a multi-threaded BLAS on a busy two-core
# machine can be slowed down a hundredfold by oversubscription (set before NumPy is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from _common import pyplot, save, write_table

import minitransformer.nn.functional.embedding as emb
from minitransformer.nn.functional.cross_entropy import cross_entropy_backward, cross_entropy_forward
from minitransformer.nn.functional.softmax import softmax_forward


def naive_softmax(z):
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def stability_table():
    rng = np.random.default_rng(0)
    N, V = 256, 65
    base = rng.standard_normal((N, V)).astype(np.float32)
    t = rng.integers(0, V, N)
    rows = []
    for scale in (1, 10, 100, 1000):
        z = base * np.float32(scale)
        with np.errstate(all="ignore"):
            p_naive = naive_softmax(z)
            ce_naive = float(-np.log(p_naive[np.arange(N), t]).mean())
        p, _ = softmax_forward(z)
        ce, cache = cross_entropy_forward(z, t)
        dz, _ = cross_entropy_backward(np.float32(1.0), cache)
        p64 = naive_softmax(z.astype(np.float64) - z.astype(np.float64).max(-1, keepdims=True))
        onehot = np.eye(V)[t]
        gerr = np.abs(dz - (p64 - onehot) / N).max()
        rows.append([scale, f"{np.isnan(p_naive).mean():.0%}", f"{ce_naive:.4g}",
                     f"{np.isnan(p).mean():.0%}", f"{float(ce):.4g}", f"{gerr:.1e}"])
        print(rows[-1])
    write_table("softmax_stability",
                ["logit scale", "naive softmax: NaN entries", "naive CE", "package softmax: NaN entries",
                 "package CE", "max \\|dz − (p − y)/N\\|"], rows,
                note="float32, N = 256 rows, V = 65 classes, logits = scale × N(0, 1). `naive` is "
                     "`exp(z) / sum(exp(z))` and `-log` of it; the package is `softmax_forward` and "
                     "`cross_entropy_forward` / `cross_entropy_backward`, compared with the float64 closed "
                     "form. Produced by `docs/figures/scripts/layer_basics.py`.")


BRANCHES = ("one-hot matmul", "sorted add.reduceat", "add.at")


def time_backward(V, N=4096, C=384, repeat=5):
    """Best wall-clock seconds of each way to scatter-add dy (N, C) into dW (V, C)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, V, N)
    w = rng.standard_normal((V, C)).astype(np.float32)
    dy = rng.standard_normal((N, C)).astype(np.float32)
    _, cache = emb.embedding_forward(idx, w)
    saved = emb.ONEHOT_MAX_VOCAB

    def real_backward(limit):
        def run():
            emb.ONEHOT_MAX_VOCAB = limit                   # force one branch of the real backward
            try:
                emb.embedding_backward(dy, cache)
            finally:
                emb.ONEHOT_MAX_VOCAB = saved
        return run

    def add_at():
        np.add.at(np.zeros((V, C), np.float32), idx, dy)

    out = {}
    for name, run in zip(BRANCHES, (real_backward(1 << 30), real_backward(-1), add_at)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
        out[name] = best
    return out


def embedding_figure():
    vocab = [16, 65, 128, 256, 512, 1024, 4096]
    res = {V: time_backward(V) for V in vocab}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name in BRANCHES:
        ax.loglog(vocab, [res[V][name] * 1e3 for V in vocab], "o-", label=name)
    ax.axvline(emb.ONEHOT_MAX_VOCAB, color="gray", ls=":", lw=1)
    ax.text(emb.ONEHOT_MAX_VOCAB * 1.05, ax.get_ylim()[0] * 1.5, "ONEHOT_MAX_VOCAB", fontsize=8, color="gray")
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("embedding backward (ms)")
    ax.set_title("Scatter-add of dy (N = 4096, C = 384, float32, CPU)")
    ax.legend()
    save(fig, "embedding_backward")
    write_table("embedding_backward", ["V"] + [f"{name} (ms)" for name in BRANCHES],
                [[V] + [f"{res[V][name] * 1e3:.2f}" for name in BRANCHES] for V in vocab],
                note="Best of 5, wall-clock time on the CPU; the first two columns are the real "
                     "`embedding_backward` with its vocabulary threshold forced one way or the other, the "
                     "third NumPy's `add.at` alone. Produced by `docs/figures/scripts/layer_basics.py`.")


if __name__ == "__main__":
    stability_table()
    embedding_figure()
