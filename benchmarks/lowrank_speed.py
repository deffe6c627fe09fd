"""Factorised vs dense matmul: measured speed-up of y = (x A) B over y = x W beside the ideal
mn / (k (m + n)), for several matrix sizes and ranks, on the CPU (or the GPU with --device cuda).

Writes docs/benchmarks/compression_lowrank_speed.{json,md} and docs/figures/compression_lowrank_speed.png
(--out, --figures: elsewhere).
Usage: python benchmarks/lowrank_speed.py [--device cpu|cuda] [--tokens 2048] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402  benchmark harness: host data and timing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer import backend  # noqa: E402
from minitransformer.compress.accounting import break_even_rank, theoretical_speedup  # noqa: E402
from minitransformer.compress.lowrank import lowrank_linear_backward, lowrank_linear_forward  # noqa: E402
from minitransformer.nn.functional.linear import linear_backward, linear_forward  # noqa: E402

SHAPES = [(256, 256), (512, 512), (1024, 1024), (512, 2048), (2048, 512)]
RANKS = [8, 32, 64, 128, 256]


def timeit_pair(f, g, device: str, repeats: int) -> tuple[float, float]:
    """Best (minimum) seconds of f() and of g(), run alternately after one warm-up each, so that
    load from other processes on the machine hits both alike; the minimum is the least disturbed run."""
    f(), g()
    tf, tg = [], []
    for _ in range(repeats):
        for fn, times in ((f, tf), (g, tg)):
            backend.synchronize(device)
            t = time.perf_counter()
            fn()
            backend.synchronize(device)
            times.append(time.perf_counter() - t)
    return min(tf), min(tg)


def measure(m: int, n: int, k: int, tokens: int, device: str, repeats: int) -> dict:
    xp = backend.xp_for(device)
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((tokens, m)), dtype=np.float32)
    w = xp.asarray(rng.standard_normal((m, n)), dtype=np.float32)
    a = xp.asarray(rng.standard_normal((m, k)), dtype=np.float32)
    b = xp.asarray(rng.standard_normal((k, n)), dtype=np.float32)
    dy = xp.asarray(rng.standard_normal((tokens, n)), dtype=np.float32)
    t_dense, t_low = timeit_pair(lambda: linear_forward(x, w), lambda: lowrank_linear_forward(x, a, b),
                                 device, repeats)
    _, cd = linear_forward(x, w)
    _, cl = lowrank_linear_forward(x, a, b)
    tb_dense, tb_low = timeit_pair(lambda: linear_backward(dy, cd), lambda: lowrank_linear_backward(dy, cl),
                                   device, repeats)
    return {"m": m, "n": n, "k": k, "tokens": tokens, "break_even": break_even_rank(m, n),
            "ideal": theoretical_speedup(m, n, k),
            "dense_fwd_ms": 1e3 * t_dense, "lowrank_fwd_ms": 1e3 * t_low, "fwd_speedup": t_dense / t_low,
            "dense_bwd_ms": 1e3 * tb_dense, "lowrank_bwd_ms": 1e3 * tb_low, "bwd_speedup": tb_dense / tb_low,
            "dense_gflops": 2 * tokens * m * n / t_dense / 1e9,
            "lowrank_gflops": 2 * tokens * k * (m + n) / t_low / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=backend.DEVICES)
    p.add_argument("--tokens", type=int, default=2048, help="rows of x (B*T tokens)")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--quick", action="store_true", help="two sizes only")
    p.add_argument("--threads", default="1", help="BLAS threads (read before NumPy loads; default 1)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="directory for the tables")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"), help="directory for the figure")
    args = p.parse_args(argv)
    backend.check_device(args.device)
    shapes = SHAPES[:2] if args.quick else SHAPES
    rows = []
    for m, n in shapes:
        for k in RANKS:
            if k >= min(m, n):
                continue
            r = measure(m, n, k, args.tokens, args.device, args.repeats)
            rows.append(r)
            print(f"{m:5d}x{n:<5d} k={k:4d}  ideal {r['ideal']:6.2f}x  fwd {r['fwd_speedup']:6.2f}x  "
                  f"bwd {r['bwd_speedup']:6.2f}x  (dense {r['dense_fwd_ms']:.2f} ms, {r['dense_gflops']:.0f} GFLOP/s)")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {THREADS} BLAS "
               f"thread(s), NumPy {np.__version__}"
               if args.device == "cpu" else "GPU (CuPy)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else "_cuda"
    (out / f"compression_lowrank_speed{suffix}.json").write_text(
        json.dumps({"device": args.device, "machine": machine, "rows": rows}, indent=1) + "\n")
    lines = [f"Measured on {args.device} ({machine}), x of {args.tokens} tokens, float32, best of "
             f"{args.repeats} (dense and factorised run alternately). Speed-up = dense time / factorised time; ideal = mn / (k(m+n)).", "",
             "| m × n | k | break-even k* | ideal | forward speed-up | backward speed-up | dense fwd (ms) | dense GFLOP/s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['m']}×{r['n']} | {r['k']} | {r['break_even']:.0f} | {r['ideal']:.2f} | "
                     f"{r['fwd_speedup']:.2f} | {r['bwd_speedup']:.2f} | {r['dense_fwd_ms']:.2f} | {r['dense_gflops']:.0f} |")
    (out / f"compression_lowrank_speed{suffix}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}/compression_lowrank_speed{suffix}.{{json,md}}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (m, n) in shapes:
        sel = [r for r in rows if (r["m"], r["n"]) == (m, n)]
        line, = ax.plot([r["ideal"] for r in sel], [r["fwd_speedup"] for r in sel], "o-", label=f"{m}×{n}")
    lim = [0.5, max(r["ideal"] for r in rows) * 1.2]
    ax.plot(lim, lim, "k--", lw=1, label="ideal (= FLOP ratio)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ideal speed-up mn / (k(m+n))")
    ax.set_ylabel("measured forward speed-up")
    ax.set_title(f"Factorised vs dense matmul ({args.device}, {args.tokens} tokens)")
    ax.legend(fontsize=8)
    fig_path = Path(args.figures) / f"compression_lowrank_speed{suffix}.png"
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, bbox_inches="tight", dpi=110)
    print(f"wrote {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
