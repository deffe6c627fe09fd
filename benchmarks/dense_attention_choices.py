"""Why the dense attention kernel is written the way it is: the NumPy choices behind
minitransformer/attention/scaled_dot_product.py, each timed against its alternative in one run.

At the shapes of the small CPU GPT (B=12, H=4, T=S=64, D=32, float32) it measures

* batched products: `xp.matmul` on 4-D arrays vs `einsum` (plain and optimize=True);
* causal masking: adding a cached -inf bias vs `where`, `putmask` and `copyto(where=)`;
* the row softmax over the last axis of (B,H,T,S) vs over the leading axis of the key-major (S,B,H,T);
* the whole forward and backward: the package's key-major kernel vs the same math in the usual
  (B,H,T,S) layout.

Times are the best of several repeats (the least disturbed by other jobs). Pin BLAS to one thread on a
shared machine: OPENBLAS_NUM_THREADS=1 python benchmarks/dense_attention_choices.py
Writes docs/benchmarks/dense_attention_choices.{json,md} (--out DIR: elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.attention.scaled_dot_product import (attention_backward,  # noqa: E402
                                                          attention_forward, key_major_bias)


def best_us(fn, number: int, repeat: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def standard_layout_forward(q, k, v, bias, scale):
    """The same math with the scores in the usual (B,H,T,S) layout (the baseline)."""
    qs = q * scale
    p = np.matmul(qs, k.swapaxes(-1, -2))               # (B,H,T,S)
    p += bias
    p -= p.max(-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(-1, keepdims=True)
    out = np.matmul(p, v)
    return out, (qs, k, v, p, out, scale)


def standard_layout_backward(dout, cache):
    qs, k, v, p, out, scale = cache
    dv = np.matmul(p.swapaxes(-1, -2), dout)
    ds = np.matmul(dout, v.swapaxes(-1, -2))
    ds -= np.einsum("bhtd,bhtd->bht", dout, out)[..., None]
    ds *= p
    dq = np.matmul(ds, k)
    dq *= scale
    dk = np.matmul(ds.swapaxes(-1, -2), qs)
    return dq, dk, dv


def measure(B, H, T, D, number, repeat):
    S = T
    rng = np.random.default_rng(0)
    # q, k, v as strided views of one fused projection, as MultiHeadAttention produces them
    qkv = rng.standard_normal((B, T, 3, H, D)).astype(np.float32).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    dout = rng.standard_normal((B, H, T, D)).astype(np.float32)
    scale = D ** -0.5
    rows = []

    def row(group, name, us, baseline=None):
        rows.append({"group": group, "variant": name, "us": round(us, 1),
                     "speedup_vs_baseline": None if baseline is None else round(baseline / us, 2)})

    # 1. batched products
    t_mm = best_us(lambda: np.matmul(q, k.swapaxes(-1, -2)), number, repeat)
    t_es = best_us(lambda: np.einsum("bhtd,bhsd->bhts", q, k), max(1, number // 10), repeat)
    t_eo = best_us(lambda: np.einsum("bhtd,bhsd->bhts", q, k, optimize=True), number, repeat)
    row("Q K^T (B,H,T,S)", "einsum (baseline)", t_es)
    row("Q K^T (B,H,T,S)", "einsum optimize=True", t_eo, t_es)
    row("Q K^T (B,H,T,S)", "matmul (used)", t_mm, t_es)

    # 2. causal masking of a (B,H,T,S) score array (each variant includes one copy of the scores)
    s = np.matmul(q, k.swapaxes(-1, -2))
    allowed = np.tril(np.ones((T, S), bool))
    bias = np.where(allowed, 0.0, -np.inf).astype(np.float32)
    blocked_full = np.broadcast_to(~allowed, s.shape).copy()
    def with_bias():
        x = s.copy()
        x += bias
        return x

    t_copy = best_us(lambda: s.copy(), number, repeat)
    t_where = best_us(lambda: np.where(allowed, s.copy(), -np.inf), number, repeat) - t_copy
    t_put = best_us(lambda: np.putmask(s.copy(), blocked_full, -np.inf), number, repeat) - t_copy
    t_cw = best_us(lambda: np.copyto(s.copy(), -np.inf, where=~allowed), number, repeat) - t_copy
    t_bias = best_us(with_bias, number, repeat) - t_copy
    row("causal mask", "where (baseline)", t_where)
    row("causal mask", "putmask (full-size mask)", t_put, t_where)
    row("causal mask", "copyto(where=)", t_cw, t_where)
    row("causal mask", "add cached -inf bias (used)", t_bias, t_where)

    # 3. the row max, in each layout
    s_km = np.ascontiguousarray(s.transpose(3, 0, 1, 2))            # (S,B,H,T)
    t_last = best_us(lambda: s.max(-1), number, repeat)
    t_lead = best_us(lambda: s_km.max(0), number, repeat)
    row("row max of the scores", "last axis of (B,H,T,S) (baseline)", t_last)
    row("row max of the scores", "leading axis of key-major (S,B,H,T) (used)", t_lead, t_last)

    # 4. whole forward and backward
    mask = allowed[None, None]
    bias_std = np.where(mask, 0.0, -np.inf).astype(np.float32)
    bias_km = key_major_bias(mask, np.float32)
    t_sf = best_us(lambda: standard_layout_forward(q, k, v, bias_std, scale), number, repeat)
    t_kf = best_us(lambda: attention_forward(q, k, v, bias=bias_km), number, repeat)
    c_std = standard_layout_forward(q, k, v, bias_std, scale)[1]
    c_km = attention_forward(q, k, v, bias=bias_km)[1]
    t_sb = best_us(lambda: standard_layout_backward(dout, c_std), number, repeat)
    t_kb = best_us(lambda: attention_backward(dout, c_km), number, repeat)
    row("forward (causal)", "standard layout (baseline)", t_sf)
    row("forward (causal)", "key-major (used)", t_kf, t_sf)
    row("backward", "standard layout (baseline)", t_sb)
    row("backward", "key-major (used)", t_kb, t_sb)
    row("forward + backward", "standard layout (baseline)", t_sf + t_sb)
    row("forward + backward", "key-major (used)", t_kf + t_kb, t_sf + t_sb)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--number", type=int, default=50, help="calls per timed repeat")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks",
                    help="directory for the results (default: docs/benchmarks)")
    args = ap.parse_args(argv)
    rows = measure(args.batch, args.heads, args.seq, args.head_dim, args.number, args.repeat)
    meta = {"shape": {"B": args.batch, "H": args.heads, "T": args.seq, "S": args.seq, "D": args.head_dim},
            "dtype": "float32", "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
            "load_average": os.getloadavg()[0]}
    lines = ["| operation | variant | µs | speed-up vs baseline |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        sp = "" if r["speedup_vs_baseline"] is None else f"{r['speedup_vs_baseline']:.2f}x"
        lines.append(f"| {r['group']} | {r['variant']} | {r['us']:.1f} | {sp} |")
    sh = meta["shape"]
    lines += ["", f"*B={sh['B']}, H={sh['H']}, T=S={sh['T']}, D={sh['D']}, float32, best of {args.repeat} "
              f"repeats of {args.number} calls; NumPy {meta['numpy']}, {meta['cpus']} CPUs, BLAS threads "
              f"{meta['blas_threads']}, load average {meta['load_average']:.2f}. "
              "Written by benchmarks/dense_attention_choices.py.*"]
    table = "\n".join(lines) + "\n"
    print(table)
    if not args.no_write:
        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "dense_attention_choices.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        (out / "dense_attention_choices.md").write_text(table)
        print(f"wrote {out / 'dense_attention_choices.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
