"""Chapter 7 tables and figure: the cost of multi-head attention, counted and measured.

1. FLOPs of one MultiHeadAttention layer (projections vs attention core) for two model sizes, with
   the measured forward + backward time of the real module and the share spent in the kernel.
2. The number of heads at fixed width: same FLOPs, measured time.
3. Decoding with a KV cache: FLOPs and measured time per generated token, with and without the cache.

Single BLAS thread (set before NumPy is imported), timed with the CPU time of the process
(time.process_time), so that other programs running on a shared machine do not inflate the numbers.
Writes docs/figures/tables/mha_flops.md, mha_heads.md, mha_kv_cache.md and docs/figures/mha_kv_cache.png.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from _common import pyplot, save, write_table  # noqa: E402

from minitransformer import backend  # noqa: E402
from minitransformer.attention.kv_cache import KVCache  # noqa: E402
from minitransformer.attention.multi_head import MultiHeadAttention  # noqa: E402


def best_of(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def flops(B, T, C):
    proj = 2 * B * T * C * 3 * C + 2 * B * T * C * C      # QKV and output projections
    core = 2 * B * T * T * C * 2                          # Q K^T and P V over all heads
    return proj, core


def timed_layer(B, T, C, H):
    rng = backend.host_rng(0)
    mha = MultiHeadAttention(C, H, rng=rng)
    x = rng.standard_normal((B, T, C)).astype(np.float32)
    dout = rng.standard_normal((B, T, C)).astype(np.float32)
    kernel_time = [0.0]
    fwd, bwd = mha.kernel.forward, mha.kernel.backward

    def timed(f):
        def g(*a, **k):
            t0 = time.process_time()
            r = f(*a, **k)
            kernel_time[0] += time.process_time() - t0
            return r
        return g
    mha.kernel.forward, mha.kernel.backward = timed(fwd), timed(bwd)

    def step():
        mha.forward(x, causal=True)
        mha.backward(dout)
    step()
    times = []
    for _ in range(5):
        kernel_time[0] = 0.0
        t = best_of(step, 1)
        times.append((t, kernel_time[0]))
    return min(times)


def flops_table():
    rows = []
    for B, T, C, H in ((12, 64, 128, 4), (4, 256, 384, 6), (1, 1024, 384, 6)):
        proj, core = flops(B, T, C)
        t, tk = timed_layer(B, T, C, H)
        rows.append([f"B={B}, T={T}, C={C}, H={H}", f"{proj / 1e6:.0f}", f"{core / 1e6:.0f}",
                     f"{core / (proj + core):.0%}", f"{t * 1e3:.1f}", f"{tk / t:.0%}"])
        print(rows[-1])
    write_table("mha_flops", ["layer", "projection MFLOP (fwd)", "attention core MFLOP (fwd)",
                              "core share of FLOPs", "measured fwd + bwd (ms)", "measured share in the kernel"],
                rows, note="Causal self-attention with the dense kernel, float32, one BLAS thread, CPU time. FLOPs count "
                           "multiply-adds as 2; the backward does twice the forward's matrix products. "
                           "Produced by `docs/figures/scripts/mha_cost.py`.")


def heads_table():
    rows = []
    B, T, C = 8, 128, 128
    for H in (1, 2, 4, 8, 16, 32):
        t, tk = timed_layer(B, T, C, H)
        rows.append([H, C // H, f"{t * 1e3:.1f}", f"{tk * 1e3:.1f}"])
        print(rows[-1])
    write_table("mha_heads", ["heads H", "head size D", "fwd + bwd (ms)", "of which attention kernel (ms)"],
                rows, note=f"B = {B}, T = {T}, C = {C}: the same FLOPs for every H. One BLAS thread, CPU time.")


def kv_cache_table():
    B, C, H = 1, 256, 8
    rng = backend.host_rng(0)
    mha = MultiHeadAttention(C, H, rng=rng)
    rows, curve = [], []
    for t in (16, 64, 256, 1024):
        x = rng.standard_normal((B, t, C)).astype(np.float32)
        with mha.no_grad():
            full = best_of(lambda: mha.forward(x, causal=True))            # recompute the whole prefix
            cache = KVCache(t + 1)
            mha.forward(x[:, :-1], causal=True, kv_cache=cache)           # prefix already cached
            one = x[:, -1:]

            def step():
                cache.length = t - 1                                      # rewind: time one step
                mha.forward(one, causal=True, kv_cache=cache)
            cached = best_of(step, 5)
        f_full = sum(flops(B, t, C))
        f_step = 2 * C * 3 * C + 2 * C * C + 4 * t * C
        rows.append([t, f"{f_full / 1e6:.1f}", f"{f_step / 1e6:.2f}", f"{full * 1e3:.2f}", f"{cached * 1e3:.3f}",
                     f"{full / cached:.0f}×"])
        curve.append((t, full, cached))
        print(rows[-1])
    write_table("mha_kv_cache", ["position t", "MFLOP without cache", "MFLOP with cache",
                                 "ms without cache", "ms with cache", "speed-up"], rows,
                note=f"One MultiHeadAttention layer (C = {C}, H = {H}, batch 1, float32, one BLAS thread, CPU time) "
                     "producing the output of the newest token at position t: recomputing the whole prefix "
                     "versus one query against cached keys and values.")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ts, a, b = zip(*curve)
    ax.loglog(ts, np.array(a) * 1e3, "o-", label="recompute the prefix")
    ax.loglog(ts, np.array(b) * 1e3, "s-", label="KV cache: one new query")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("position t of the new token")
    ax.set_ylabel("time per step (ms)")
    ax.set_title(f"One attention layer while decoding (C = {C}, H = {H})")
    ax.legend()
    save(fig, "mha_kv_cache")


if __name__ == "__main__":
    flops_table()
    heads_table()
    kv_cache_table()
