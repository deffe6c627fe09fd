"""How every attention kernel scales with the sequence length N: forward+backward time, peak memory,
and the error against exact attention.

For each registered kernel (``kernel_names()``, dense included) and each N, on random q, k, v of
shape (B, H, N, D):

* **time**: wall-clock seconds of ``forward`` + ``backward`` (after one untimed warm-up call at the
  smallest N), the best of at least two untraced calls (up to five while they fit in
  ``--repeat-seconds``): the minimum is the least disturbed by other processes;
* **peak memory**: the largest number of bytes allocated *on top of* the inputs at any moment during
  one forward+backward, measured with ``tracemalloc``. NumPy reports every array buffer it allocates
  to tracemalloc, so this counts exactly the arrays the kernel creates (scores, probabilities,
  caches, gradients, temporaries) and nothing else; strided views cost nothing, as they should.
  This run is separate from the timed ones (tracing slows Python code down). On a GPU the CuPy
  memory pool's peak would be the analogue (not measured here: CPU only);
* **error**: ``||O - O_exact|| / ||O_exact||`` of the forward output against exact attention (the
  dense kernel where it fits, else the memory-efficient exact kernel).

Dense attention is refused, not run, where its two N x N float buffers (probabilities and their
gradient) would exceed ``--memory-budget-gb``; the estimate is reported. A kernel whose next
length is predicted (from its last two times) to take more than ``--time-budget`` seconds is
skipped at that length and above. Sparse Transformer patterns are causal by definition, so they run
with ``causal=True``; every other kernel runs bidirectionally.

Usage: ``minitransformer bench attention [-- --help]`` writes JSON, Markdown tables and (with
matplotlib) a plot into ``--out`` (default: the current directory);
``python benchmarks/attention_scaling.py [--quick] [--help]`` regenerates the documentation's (it
passes ``--out docs/benchmarks`` and ``--figure docs/figures/attention_scaling.png``). On a machine shared with other jobs, pin BLAS to one
thread (``OPENBLAS_NUM_THREADS=1``, set before Python starts): a multi-threaded BLAS whose threads
wait for busy cores can run tens of times slower, which would measure the neighbours, not the kernel.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

from .. import backend
from ..attention import kernel_names, make_kernel
from .output import non_negative_float, output_dir, positive_float, positive_int, save_plot

EXACT = ("dense", "memory_efficient")
PATTERN_EXACT = ("sliding_window", "dilated", "longformer", "sparse_strided", "sparse_fixed", "bigbird")
CAUSAL_ONLY = ("sparse_strided", "sparse_fixed")

# options each kernel is benchmarked with (documented in the output)
DEFAULT_OPTIONS = {
    "memory_efficient": {"block_size": 512},
    "sliding_window": {"window": 128},
    "dilated": {"window": 64, "dilation": 4},
    "longformer": {"window": 128, "global_tokens": [0]},
    "bigbird": {"block": 64, "random_blocks": 3},
    "linformer": {"k": 256},
}


def dense_bytes(n: int, b: int, h: int, itemsize: int) -> int:
    """Estimate of dense attention's memory: two (B,H,N,N) buffers (P and dS)."""
    return 2 * b * h * n * n * itemsize


def _make(name, n, args, device, dtype):
    opts = dict(DEFAULT_OPTIONS.get(name, {}))
    kern = make_kernel(name, args.heads, args.head_dim, max_len=n, rng=backend.host_rng(0), **opts)
    return kern.to(device, dtype), opts


def _inputs(n, args, device, dtype, seed=0):
    rng = np.random.default_rng(seed)
    shape = (args.batch, args.heads, n, args.head_dim)
    return [backend.to_device(rng.standard_normal(shape), device, dtype) for _ in range(3)]


def _run(kern, q, k, v, causal, device):
    out = kern.forward(q, k, v, causal=causal)
    grads = kern.backward(backend.to_device(np.ones(out.shape), device, out.dtype))
    backend.synchronize(device)
    return out, grads


def _measure_memory(kern, q, k, v, causal, device):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out, grads = _run(kern, q, k, v, causal, device)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, peak, elapsed


def _measure_time(kern, q, k, v, causal, device, repeat_seconds, min_repeats=2):
    """Best of at least `min_repeats` untraced calls, more while they fit in `repeat_seconds` (max 5)."""
    times = []
    while len(times) < min_repeats or (sum(times) < repeat_seconds and len(times) < 5):
        t0 = time.perf_counter()
        _run(kern, q, k, v, causal, device)
        times.append(time.perf_counter() - t0)
    return min(times), len(times)


def fit_slope(ns, values, min_n=2048):
    """Least-squares slope of log(value) against log(N), over the points with N >= min_n (all when
    fewer than two are that long)."""
    pts = [(n, v) for n, v in zip(ns, values) if v]
    big = [(n, v) for n, v in pts if n >= min_n]
    pts = big if len(big) >= 2 else pts
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def run(args) -> dict:
    device, dtype = args.device, np.dtype(args.dtype)
    names = args.kernels or kernel_names()
    results = {"config": {"lengths": args.lengths, "batch": args.batch, "heads": args.heads,
                          "head_dim": args.head_dim, "dtype": str(dtype), "device": device,
                          "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS",
                                                         os.environ.get("OMP_NUM_THREADS", "default")),
                          "memory_budget_gb": args.memory_budget_gb, "time_budget_s": args.time_budget,
                          "options": {n: DEFAULT_OPTIONS.get(n, {}) for n in names},
                          "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                     f"numpy {np.__version__}"},
               "kernels": {n: {} for n in names}, "baseline_mean_v_error": {}}
    results["config"]["load_average_at_start"] = list(os.getloadavg())
    exact_out = {}
    last_time = {n: [] for n in names}
    # warm-up: import paths, BLAS threads, allocator
    q, k, v = _inputs(min(args.lengths), args, device, dtype)
    for name in names:
        kern, _ = _make(name, min(args.lengths), args, device, dtype)
        _run(kern, q, k, v, name in CAUSAL_ONLY, device)
    for n in args.lengths:
        q, k, v = _inputs(n, args, device, dtype)
        exact_out.clear()
        order = ["dense", "memory_efficient"] + [x for x in names if x not in EXACT]
        for name in [x for x in order if x in names]:
            causal = name in CAUSAL_ONLY
            entry = results["kernels"][name]
            if name == "dense" and dense_bytes(n, args.batch, args.heads, dtype.itemsize) > args.memory_budget_gb * 2**30:
                est = dense_bytes(n, args.batch, args.heads, dtype.itemsize)
                entry[str(n)] = {"status": "refused", "estimated_bytes": est}
                print(f"{name:>17} N={n:>6}  refused: dense scores need ~{est / 2**30:.1f} GiB "
                      f"> budget {args.memory_budget_gb} GiB", flush=True)
                continue
            hist = last_time[name]
            if len(hist) >= 1:
                slope = 2.0 if len(hist) < 2 else min(2.5, max(1.0, math.log(hist[-1][1] / hist[-2][1]) /
                                                               math.log(hist[-1][0] / hist[-2][0])))
                predicted = hist[-1][1] * (n / hist[-1][0]) ** slope
                if predicted > args.time_budget or entry.get("skipped_from"):
                    entry[str(n)] = {"status": "skipped", "predicted_s": predicted}
                    entry.setdefault("skipped_from", n)
                    print(f"{name:>17} N={n:>6}  skipped: predicted {predicted:.0f} s > {args.time_budget} s",
                          flush=True)
                    continue
            try:
                kern, _ = _make(name, n, args, device, dtype)
                out, peak, _ = _measure_memory(kern, q, k, v, causal, device)   # traced call: memory only
                best, reps = _measure_time(kern, q, k, v, causal, device, args.repeat_seconds)
            except MemoryError as err:
                entry[str(n)] = {"status": "out of memory", "error": str(err)[:200]}
                print(f"{name:>17} N={n:>6}  out of memory", flush=True)
                continue
            rec = {"status": "ok", "time_s": best, "repeats": reps, "peak_bytes": int(peak), "causal": causal}
            ref = exact_out.get(causal)
            if ref is None and name in EXACT:
                exact_out[causal] = backend.to_numpy(out).astype(np.float64)     # the reference itself
            elif ref is None and n <= args.error_max_len:
                ref_kern, _ = _make("memory_efficient", n, args, device, dtype)
                ref = backend.to_numpy(ref_kern.forward(q, k, v, causal=causal)).astype(np.float64)
                exact_out[causal] = ref
            if ref is not None:
                o = backend.to_numpy(out).astype(np.float64)
                rec["rel_error"] = float(np.linalg.norm(o - ref) / np.linalg.norm(ref))
            entry[str(n)] = rec
            hist.append((n, best))
            err = f"  rel.err {rec['rel_error']:.2e}" if "rel_error" in rec else ""
            print(f"{name:>17} N={n:>6}  {best:8.3f} s  peak {peak / 2**20:9.1f} MiB{err}", flush=True)
            del kern, out
        ref = exact_out.get(False)
        if ref is not None:            # what an output that ignores the queries would score
            mean_v = np.broadcast_to(backend.to_numpy(v).astype(np.float64).mean(axis=2, keepdims=True), ref.shape)
            results["baseline_mean_v_error"][str(n)] = float(np.linalg.norm(mean_v - ref) / np.linalg.norm(ref))
    results["config"]["load_average_at_end"] = list(os.getloadavg())
    for name, entry in results["kernels"].items():
        ok = [(int(n), r) for n, r in entry.items() if isinstance(r, dict) and r.get("status") == "ok"]
        ns = [n for n, _ in ok]
        entry["time_slope"] = fit_slope(ns, [r["time_s"] for _, r in ok])
        entry["memory_slope"] = fit_slope(ns, [r["peak_bytes"] for _, r in ok])
    return results


def _fmt_time(r):
    if r is None:
        return "-"
    if r["status"] == "refused":
        return f"refused (~{r['estimated_bytes'] / 2**30:.0f} GiB)"
    if r["status"] != "ok":
        return r["status"]
    return f"{r['time_s']:.3f}" if r["time_s"] < 10 else f"{r['time_s']:.1f}"


def _fmt_mem(r):
    if r is None or r["status"] != "ok":
        return "-" if r is None or r["status"] != "refused" else f"(~{r['estimated_bytes'] / 2**20:,.0f})"
    return f"{r['peak_bytes'] / 2**20:,.1f}"


def _load(cfg, when):
    vals = cfg.get(f"load_average_at_{when}")
    return "-" if not vals else "/".join(f"{x:.1f}" for x in vals)


def markdown(results) -> str:
    cfg = results["config"]
    ns = cfg["lengths"]
    head = "| kernel | " + " | ".join(f"N={n}" for n in ns) + " | slope |"
    sep = "|---|" + "---:|" * (len(ns) + 1)
    lines = [f"Forward+backward on {cfg['device']} ({cfg['machine']}), {cfg['dtype']}, B={cfg['batch']}, "
             f"H={cfg['heads']}, D={cfg['head_dim']}, BLAS threads {cfg.get('blas_threads', '?')}; memory budget for dense {cfg['memory_budget_gb']} GiB, "
             f"time budget {cfg['time_budget_s']} s per call. Load average (1, 5, 15 min) at start "
             f"{_load(cfg, 'start')}, at end {_load(cfg, 'end')}: other processes shared the 2 cores.", "", "**Time (seconds)**", "", head, sep]
    kernels = results["kernels"]
    for name, entry in kernels.items():
        slope = entry.get("time_slope")
        lines.append(f"| {name} | " + " | ".join(_fmt_time(entry.get(str(n))) for n in ns)
                     + f" | {'-' if slope is None else f'{slope:.2f}'} |")
    lines += ["", "**Peak extra memory (MiB, tracemalloc)**", "", head, sep]
    for name, entry in kernels.items():
        slope = entry.get("memory_slope")
        lines.append(f"| {name} | " + " | ".join(_fmt_mem(entry.get(str(n))) for n in ns)
                     + f" | {'-' if slope is None else f'{slope:.2f}'} |")
    lines += ["", "**Relative error of the output against exact attention** "
              "(‖O − O_exact‖ / ‖O_exact‖, same inputs; sparse patterns are exact on their pattern, so "
              "this is what the pattern leaves out)", "",
              "| kernel | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]
    for name, entry in kernels.items():
        if name == "dense":
            continue
        cells = []
        for n in ns:
            r = entry.get(str(n))
            cells.append(f"{r['rel_error']:.2e}" if r and "rel_error" in r else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base = results.get("baseline_mean_v_error", {})
    if base:
        lines.append("| *baseline: every row = mean of V* | " + " | ".join(
            f"{base[str(n)]:.2e}" if str(n) in base else "-" for n in ns) + " |")
        lines += ["", "Random Gaussian q, k, v (logits of standard deviation about 1) give spread-out attention: the exact output is an average "
                  "over all N values, with a norm that shrinks like 1/sqrt(N). A kernel that averages over "
                  "fewer keys (a window, a few buckets) then has a *larger* output, and relative errors above "
                  "1 are expected; the mean-of-V row shows what ignoring the queries entirely would score."]
    opts = "; ".join(f"{n}: {o}" for n, o in cfg["options"].items() if o)
    lines += ["", f"Options: {opts}. Slopes: least-squares fit of log(value) on log(N) over N ≥ 2048. "
              f"Sparse Transformer kernels run causal (their patterns are causal), the rest bidirectional.", ""]
    return "\n".join(lines)


def markdown_exact(results) -> str:
    """Dense vs memory-efficient exact attention, side by side, with ratios."""
    ns = results["config"]["lengths"]
    dense, flash = results["kernels"].get("dense", {}), results["kernels"].get("memory_efficient", {})
    lines = ["| N | dense time (s) | memory-efficient time (s) | time ratio | dense peak (MiB) | "
             "memory-efficient peak (MiB) | dense / memory-efficient peak |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in ns:
        d, f = dense.get(str(n)), flash.get(str(n))
        if f is None or f.get("status") != "ok":
            continue
        both = d is not None and d.get("status") == "ok"
        t_ratio = f"{f['time_s'] / d['time_s']:.2f}" if both else "-"
        m_ratio = f"{d['peak_bytes'] / f['peak_bytes']:.1f}" if both else "-"
        lines.append(f"| {n} | {_fmt_time(d)} | {_fmt_time(f)} | {t_ratio} | {_fmt_mem(d)} | {_fmt_mem(f)} | "
                     f"{m_ratio} |")
    lines += ["", "Time ratio: memory-efficient / dense. A dense entry in parentheses is the refused "
              "estimate (MiB).", ""]
    return "\n".join(lines)


def markdown_subset(results, names) -> str:
    """One compact table (time and peak memory per cell, fitted slopes) for a few kernels."""
    ns = results["config"]["lengths"]
    lines = ["| kernel | " + " | ".join(f"N={n}" for n in ns) + " | time slope | memory slope |",
             "|---|" + "---:|" * (len(ns) + 2)]
    for name in names:
        entry = results["kernels"].get(name)
        if entry is None:
            continue
        cells = []
        for n in ns:
            r = entry.get(str(n))
            if r is not None and r.get("status") == "ok":
                cells.append(f"{_fmt_time(r)} s, {r['peak_bytes'] / 2**20:,.0f} MiB")
            else:
                cells.append(_fmt_time(r))
        ts, ms = entry.get("time_slope"), entry.get("memory_slope")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'-' if ts is None else f'{ts:.2f}'} | "
                     f"{'-' if ms is None else f'{ms:.2f}'} |")
    return "\n".join(lines + ["", "Each cell: forward+backward seconds, peak extra MiB (tracemalloc).", ""])


def plot(results, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    markers = "osD^v<>ph*xP+"
    for idx, (name, entry) in enumerate(results["kernels"].items()):
        ok = sorted((int(n), r) for n, r in entry.items() if isinstance(r, dict) and r.get("status") == "ok")
        if not ok:
            continue
        ns = [n for n, _ in ok]
        style = dict(marker=markers[idx % len(markers)], ms=4, lw=2.0 if name in EXACT else 1.1,
                     color=plt.get_cmap("tab20")(idx % 20),
                     ls="-" if name in EXACT + PATTERN_EXACT else "--")
        ts, ms = entry.get("time_slope"), entry.get("memory_slope")
        axes[0].loglog(ns, [r["time_s"] for _, r in ok], label=f"{name} ({ts:.2f})" if ts else name, **style)
        axes[1].loglog(ns, [max(r["peak_bytes"], 1) / 2**20 for _, r in ok],
                       label=f"{name} ({ms:.2f})" if ms else name, **style)
    refused = [int(n) for n, r in results["kernels"].get("dense", {}).items()
               if isinstance(r, dict) and r.get("status") == "refused"]
    for n in refused:
        est = results["kernels"]["dense"][str(n)]["estimated_bytes"] / 2**20
        axes[1].plot([n], [est], "rx", ms=9)
        axes[1].annotate("dense refused\n(estimate)", (n, est), fontsize=8, ha="right", va="bottom")
    for ax, title, unit in ((axes[0], "forward + backward time", "seconds"),
                            (axes[1], "peak extra memory", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(unit)
        ax.set_title(f"{title} (fitted slope in legend)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="minitransformer bench attention",
                                description="Time, peak memory and error of every attention kernel vs N.")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384, 32768])
    p.add_argument("--kernels", nargs="+", help="kernel names (default: every registered kernel)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--heads", type=positive_int, default=1)
    p.add_argument("--head-dim", type=positive_int, default=64)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--memory-budget-gb", type=positive_float, default=4.0,
                   help="refuse dense attention above this estimate (GiB); default %(default)s")
    p.add_argument("--time-budget", type=positive_float, default=300.0,
                   help="skip a kernel's longer lengths once one is predicted to take longer (s)")
    p.add_argument("--repeat-seconds", type=non_negative_float, default=3.0, help="time spent on repeats per point")
    p.add_argument("--error-max-len", type=positive_int, default=8192,
                   help="compute the error against exact attention up to this N")
    p.add_argument("--quick", action="store_true", help="small run: N in {256, 512, 1024}, short budgets, "
                   "results written with the suffix _quick")
    p.add_argument("--out", "--out-dir", dest="out", metavar="DIR",
                   help="directory for the JSON and Markdown results (default: the current directory)")
    p.add_argument("--figure", metavar="PNG", help="where the plot goes (default: OUT/attention_scaling.png)")
    p.add_argument("--no-plot", action="store_true", help="write the tables only")
    p.add_argument("--from-json", metavar="FILE", help="do not measure: re-render the tables and the plot "
                   "from a JSON file written by an earlier run")
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.time_budget, args.repeat_seconds = [256, 512, 1024], 10.0, 0.5
    if args.device == "cuda":
        backend.check_device("cuda")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = output_dir(args.out)                 # checked before the (long) measurement
    results = json.loads(Path(args.from_json).read_text()) if args.from_json else run(args)
    suffix = "_quick" if args.quick else ""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"attention_scaling{suffix}{part}" for part in
               (".json", ".md", "_memory_efficient.md", "_sparse.md")]
    written[0].write_text(json.dumps(results, indent=1))
    text = markdown(results)
    written[1].write_text(text)
    written[2].write_text(markdown_exact(results))
    written[3].write_text(markdown_subset(results, ("dense",) + PATTERN_EXACT))
    print(text)
    print(f"wrote {', '.join(p.name for p in written)} in {out_dir.resolve()}")
    if not args.no_plot:
        fig = Path(args.figure) if args.figure else out_dir / "attention_scaling.png"
        fig = save_plot(lambda path: plot(results, path), fig.with_name(fig.stem + suffix + fig.suffix))
        if fig is not None:
            print(f"wrote {fig.resolve()}")
    return 0
