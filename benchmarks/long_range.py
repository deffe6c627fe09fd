"""The long-range retrieval task with every attention kernel: who can see beyond the window?

A value token is hidden at a random distance d in [1, N-1] from [CLS]; a one-layer encoder reads
the answer at [CLS] (minitransformer/data/long_range.py). Each kernel trains the same model (same
seed, data and steps); we report held-out accuracy overall, for d <= W and for d > W, where W is
the sliding window's half-width, how many seeds solved the task (accuracy >= 0.99), and the time of
one training step relative to dense attention. Step times are measured in a separate phase, round-robin
over the kernels and the best of several rounds, so that a machine shared with other jobs slows every
kernel alike.

Usage: python benchmarks/long_range.py [--quick] [--seeds 3] [--steps 400]
Writes docs/benchmarks/long_range.json and docs/benchmarks/long_range.md (--out DIR: elsewhere).
BLAS is pinned to one thread unless OPENBLAS_NUM_THREADS is set (tiny matrices on a shared machine).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.long_range import train_retrieval  # noqa: E402
from minitransformer.data.long_range import RetrievalClassifier, RetrievalTask, retrieval_batch  # noqa: E402
from minitransformer.nn.loss import CrossEntropyLoss  # noqa: E402
from minitransformer.optim import AdamW  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"


def kernels(W: int, N: int):
    """(label, kernel name, options): the window kernels use the same W."""
    return [
        ("dense", "dense", {}),
        (f"sliding_window (W={W})", "sliding_window", {"window": W}),
        (f"longformer (W={W}, global [CLS])", "longformer", {"window": W, "global_tokens": [0]}),
        ("linear (elu+1)", "linear", {}),
        ("performer (M=32)", "performer", {"n_features": 32}),
        ("linformer (K=32)", "linformer", {"k": 32}),
        ("reformer (8 buckets, 2 rounds, chunk 16)", "reformer",
         {"n_buckets": 8, "n_hashes": 2, "chunk_size": 16}),
        ("nystrom (16 landmarks)", "nystrom", {"n_landmarks": 16}),
    ]


def step_times(task, specs, rounds=5, steps=3):
    """Best-of-rounds seconds per training step for each (label, name, options), interleaved."""
    rng = np.random.default_rng(0)
    tokens, labels = retrieval_batch(task, 32, rng)
    setups = []
    for _, name, opts in specs:
        model = RetrievalClassifier(task, attention=name, attention_options=opts)
        setups.append((model, CrossEntropyLoss(), AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)))

    def step(model, loss_fn, opt):
        loss_fn(model(tokens)[0], labels)
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    for setup in setups:          # warm-up
        step(*setup)
    best = [float("inf")] * len(setups)
    for _ in range(rounds):
        for i, setup in enumerate(setups):
            t0 = time.perf_counter()
            for _ in range(steps):
                step(*setup)
            best[i] = min(best[i], (time.perf_counter() - t0) / steps)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (N=32, 80 steps, one seed)")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--out", type=Path, default=OUT, help="directory for the results (default: docs/benchmarks)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seq_len, args.steps, args.seeds, args.window = 32, 80, 1, 4
    N, W = args.seq_len, args.window
    task = RetrievalTask(seq_len=N, n_classes=8, n_noise=32, min_distance=1, max_distance=N - 1)
    rows = []
    specs = kernels(W, N)
    for label, name, opts in specs:
        runs = []
        for seed in range(args.seeds):
            runs.append(train_retrieval(task, name, opts, steps=args.steps, batch_size=32, lr=args.lr,
                                        seed=seed, split=W))
        row = {"label": label, "kernel": name, "options": opts,
               "accuracy": float(np.mean([r["accuracy"] for r in runs])),
               "accuracy_near": float(np.mean([r["accuracy_near"] for r in runs])),
               "accuracy_far": float(np.mean([r["accuracy_far"] for r in runs])),
               "final_loss": float(np.mean([r["final_loss"] for r in runs])),
               "solved": sum(r["accuracy"] >= 0.99 for r in runs), "runs": runs}
        rows.append(row)
        print(f"{label:45s} acc {row['accuracy']:.3f}  d<=W {row['accuracy_near']:.3f}  "
              f"d>W {row['accuracy_far']:.3f}  loss {row['final_loss']:.3f}  solved {row['solved']}/{args.seeds}",
              flush=True)
    for row, sec in zip(rows, step_times(task, specs)):
        row["ms_per_step"] = 1000 * sec
    dense_ms = rows[0]["ms_per_step"]
    meta = {"seq_len": N, "window": W, "steps": args.steps, "seeds": args.seeds, "batch_size": 32,
            "lr": args.lr, "d_model": 32, "n_head": 2, "n_layer": 1, "n_classes": task.n_classes,
            "chance": 1 / task.n_classes, "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "numpy": np.__version__, "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")}
    md = [f"Long-range retrieval, N = {N}, window W = {W}, {args.steps} steps x batch 32, "
          f"mean of {args.seeds} seed(s); chance = {1 / task.n_classes:.3f}. "
          f"Accuracy on 1024 held-out examples, split by the value's distance d from [CLS]. "
          f"Solved: seeds reaching accuracy >= 0.99. Time: one training step (batch 32, CPU, float32, "
          f"{meta['blas_threads']} BLAS thread), best of 5 interleaved rounds, relative to dense.",
          "",
          "| kernel | accuracy | d <= W | d > W | solved | final loss | ms / step | time vs dense |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        md.append(f"| {r['label']} | {r['accuracy']:.3f} | {r['accuracy_near']:.3f} | {r['accuracy_far']:.3f} "
                  f"| {r['solved']}/{args.seeds} | {r['final_loss']:.3f} | {r['ms_per_step']:.1f} "
                  f"| {r['ms_per_step'] / dense_ms:.2f}x |")
    text = "\n".join(md) + "\n"
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "long_range.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (args.out / "long_range.md").write_text(text)
        print(f"wrote {args.out / 'long_range.json'} and {args.out / 'long_range.md'}")


if __name__ == "__main__":
    main()
