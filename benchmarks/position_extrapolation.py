"""Positions that extrapolate: train at context 64, evaluate at 64, 128 and 256.

Five GPTs that differ only in GPTConfig.positional (learned, sinusoidal, rope, alibi, t5_bias) are trained
with the same data, seed, steps and schedule on the built-in corpus at context 64; each is then
rebuilt with a context of 256 and the same weights (`benchmarking.extrapolation.longer_context`) and
evaluated on the same validation windows of 64, 128 and 256 characters. A learned table has no rows
beyond position 63: that model is evaluated at 64 only and reported as not applicable beyond.
t5_bias is T5's causal relative bias (32 buckets, max distance 128, one table shared by the layers):
beyond distance 128 every key shares the last bucket, so nothing in it is tied to the length 64 either.

Usage: python benchmarks/position_extrapolation.py [--steps 600] [--quick] [--out DIR]
Writes docs/benchmarks/position_extrapolation.json and .md, and docs/figures/position_extrapolation.png.
BLAS is pinned to one thread unless OPENBLAS_NUM_THREADS is set (small matrices on a shared machine).
"""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.benchmarking.extrapolation import NotExtrapolable, longer_context, loss_by_position  # noqa: E402
from minitransformer.benchmarking.output import save_plot, tables_and_figures  # noqa: E402
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.models.gpt import GPT, GPTConfig  # noqa: E402
from minitransformer.tasks import CausalLMTask  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

DOCS = ROOT / "docs"
TRAIN_T = 64
EVAL_T = (64, 128, 256)
POSITIONALS = ("learned", "sinusoidal", "rope", "alibi", "t5_bias")


def run(steps: int, windows: int, corpus_chars: int):
    task = CausalLMTask.from_text(default_corpus(corpus_chars), TRAIN_T, 0.1)
    rows, curves = [], {}
    for positional in POSITIONALS:
        t0 = time.perf_counter()
        cfg = task.adapt(GPTConfig(n_layer=2, n_head=4, d_model=64, block_size=TRAIN_T, positional=positional))
        model = GPT(cfg, seed=0)
        tc = TrainConfig(steps=steps, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=50, eval_interval=steps,
                         eval_iters=4, threads=1, num_samples=0, seed=1)
        fit(model, task, tc, progress=False, log=lambda *a: None)
        row = {"positional": positional, "parameters": model.num_parameters()}
        try:
            evaluated = longer_context(model, max(EVAL_T))
            row["note"] = ""
        except NotExtrapolable as err:
            evaluated, row["note"] = model, str(err)
        for T in EVAL_T:
            if T > evaluated.config.block_size:
                row[f"loss_{T}"] = None
                continue
            per_position = loss_by_position(evaluated, task.val_ids, T, windows)
            row[f"loss_{T}"] = float(per_position.mean())
            if T == max(EVAL_T):
                row["loss_beyond_train"] = float(per_position[TRAIN_T:].mean())
            curves[positional] = per_position.tolist()      # the longest evaluated
        row["seconds"] = time.perf_counter() - t0
        shown = ", ".join(f"T={T}: {row[f'loss_{T}']:.3f}" if row[f"loss_{T}"] is not None else f"T={T}: n/a"
                          for T in EVAL_T)
        print(f"  {positional:10s} {shown}  ({row['seconds']:.0f} s)")
        rows.append(row)
    return rows, curves


def write_table(result, out: Path):
    lines = [f"Validation cross-entropy (nats per character; bits = nats / ln 2) of 2-block GPTs (C = 64, H = 4) "
             f"trained for {result['steps']} steps x batch 16 at context {TRAIN_T} on the built-in corpus, "
             f"then evaluated with the same weights on {result['windows']} validation windows of each length "
             "(the mean over all positions of a window). n/a: a learned table has no rows beyond "
             f"position {TRAIN_T - 1}. Ratio: loss at 256 / loss at 64 (1 = no degradation).", "",
             "| positional | params | T = 64 | T = 128 | T = 256 | positions 64..255 only | 256 / 64 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        def cell(v):
            return "n/a" if v is None else f"{v:.3f}"
        ratio = "n/a" if r["loss_256"] is None else f"{r['loss_256'] / r['loss_64']:.2f}"
        lines.append(f"| {r['positional']} | {r['parameters']:,} | {cell(r['loss_64'])} | {cell(r['loss_128'])} | "
                     f"{cell(r['loss_256'])} | {cell(r.get('loss_beyond_train'))} | {ratio} |")
    blocks = [(0, 64), (64, 96), (96, 128), (128, 160), (160, 192), (192, 256)]
    lines += ["", f"Mean loss over blocks of positions of the {max(EVAL_T)}-character windows (the curves of the figure):",
              "", "| positional | " + " | ".join(f"{a}..{b - 1}" for a, b in blocks) + " |",
              "| --- | " + " | ".join("---:" for _ in blocks) + " |"]
    for name, curve in result["curves"].items():
        curve = np.asarray(curve)
        cells = [f"{curve[a:b].mean():.2f}" if b <= len(curve) else "n/a" for a, b in blocks]
        label = name if len(curve) == max(EVAL_T) else f"{name} (windows of {len(curve)})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (out / "position_extrapolation.md").write_text("\n".join(lines) + "\n")


def plot(result, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, curve in result["curves"].items():
        c = np.convolve(curve, np.ones(8) / 8, mode="valid")                 # smooth over 8 positions
        ax.plot(np.arange(len(c)) + 4, c, label=name)
    ax.axvline(TRAIN_T, color="k", ls=":", lw=1)
    ax.text(TRAIN_T + 2, ax.get_ylim()[1] * 0.97, "training length", va="top", fontsize=8)
    ax.set(xlabel="position in the window", ylabel="cross-entropy (nats), mean of 8 positions",
           title=f"trained at {TRAIN_T}, evaluated at {max(EVAL_T)}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="training steps per model")
    p.add_argument("--windows", type=int, default=64, help="validation windows per length")
    p.add_argument("--quick", action="store_true", help="30 steps, 8 windows, a small corpus (smoke test)")
    p.add_argument("--out", default=None, help="directory for the tables (default docs/benchmarks; "
                   "the figure goes to docs/figures, or DIR/figures)")
    args = p.parse_args(argv)
    out, fig_dir = tables_and_figures(args.out, DOCS)
    steps, windows = (30, 8) if args.quick else (args.steps, args.windows)
    t0 = time.perf_counter()
    rows, curves = run(steps, windows, 100_000 if args.quick else 1_000_000)
    result = {"steps": steps, "windows": windows, "train_T": TRAIN_T, "eval_T": list(EVAL_T), "rows": rows,
              "curves": curves, "nats_to_bits": 1 / math.log(2),
              "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS")},
              "seconds": time.perf_counter() - t0}
    (out / "position_extrapolation.json").write_text(json.dumps(result, indent=1))
    write_table(result, out)
    written = save_plot(partial(plot, result), fig_dir / "position_extrapolation.png")
    print(f"wrote {out}/position_extrapolation.md/.json" + (f", {written}" if written else "")
          + f" in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
