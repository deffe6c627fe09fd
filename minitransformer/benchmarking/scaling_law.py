"""A small scaling-law experiment: validation loss against parameters and training tokens.

GPTs of growing width train on the built-in corpus (characters) with the same recipe (AdamW, a
constant learning rate after a short warm-up, the same batch), and the validation loss is taken
along each run, so every run gives a curve of loss against tokens seen. Kaplan et al. (2020) found
that, away from the limits of data and compute, the loss falls as a power law of the non-embedding
parameters N, L(N) ~ (N_c / N)^alpha_N, and of the tokens D; this experiment is far too small to
measure their exponents, but it shows the shape: bigger models reach lower loss for the same tokens,
and the gap grows with the tokens. The fitted exponent (least squares on log L against log N at
the largest budget) is reported with that caveat.

Writes scaling_law.json and scaling_law.md into --out and the figure scaling_law.png into --figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np  # benchmark harness: the power-law fit

from ..data.corpus import default_corpus
from ..models.gpt import GPT, GPTConfig
from ..tasks import CausalLMTask
from ..train import TrainConfig, fit
from .output import output_dir, positive_int, save_plot

WIDTHS = (16, 32, 48, 64)


def non_embedding_parameters(model) -> int:
    """Parameters outside the token and position embeddings (Kaplan et al.'s N)."""
    return sum(p.data.size for name, p in model.named_parameters() if not name.startswith(("wte", "wpe")))


def run_one(width: int, steps: int, interval: int) -> dict:
    cfg = GPTConfig(block_size=64, n_layer=2, n_head=max(1, width // 16), d_model=width, dropout=0.0)
    train = TrainConfig(steps=steps, batch_size=8, lr=3e-3, schedule="constant", warmup=20, eval_interval=interval,
                        eval_iters=8, num_samples=0, threads=1, weight_decay=0.1)
    task = CausalLMTask.from_text(default_corpus(), cfg.block_size, train.val_fraction)
    cfg = task.adapt(cfg)
    model = GPT(cfg, seed=0).to("cpu", "float32")
    t0 = time.perf_counter()
    result = fit(model, task, train, progress=False, log=lambda *a: None)
    tokens_per_step = train.batch_size * cfg.block_size
    return {"width": width, "parameters": model.num_parameters(), "non_embedding": non_embedding_parameters(model),
            "tokens": [row["step"] * tokens_per_step for row in result["history"]],
            "val_loss": [row["val_loss"] for row in result["history"]], "seconds": time.perf_counter() - t0}


def power_law(runs: list) -> float:
    """alpha_N of L = c N^-alpha fitted to the last validation loss of each run."""
    n = np.log([r["non_embedding"] for r in runs])
    loss = np.log([r["val_loss"][-1] for r in runs])
    slope, _ = np.polyfit(n, loss, 1)
    return float(-slope)


def plot(runs: list, alpha: float, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        a.plot(r["tokens"], r["val_loss"], "o-", ms=3, label=f"N = {r['non_embedding']:,}")
    a.set_xscale("log")
    a.set_xlabel("training tokens D")
    a.set_ylabel("validation loss (nats per character)")
    a.set_title("loss against tokens, one curve per model size")
    a.legend()
    for i in range(len(runs[0]["tokens"])):
        n = [r["non_embedding"] for r in runs]
        b.plot(n, [r["val_loss"][i] for r in runs], "o-", ms=3, alpha=0.3 + 0.7 * (i + 1) / len(runs[0]["tokens"]),
               color="C0", label=f"D = {runs[0]['tokens'][i]:,}" if i in (0, len(runs[0]["tokens"]) - 1) else None)
    b.set_xscale("log")
    b.set_yscale("log")
    b.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    b.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.1f"))
    b.set_xlabel("non-embedding parameters N")
    b.set_title(f"loss against parameters (last budget: alpha_N = {alpha:.2f})")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=positive_int, default=240, help="optimizer steps per model")
    parser.add_argument("--interval", type=positive_int, default=40, help="steps between validations")
    parser.add_argument("--out", help="output directory for JSON and Markdown (default: current directory)")
    parser.add_argument("--figures", help="output directory for the figure (default: --out)")
    parser.add_argument("--from-json", metavar="FILE", help="redraw the table and figure from a saved "
                        "scaling_law.json instead of training")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    figures = Path(args.figures) if args.figures else out
    out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        runs, alpha = result["runs"], result["alpha_N"]
    else:
        runs = []
        for width in WIDTHS:
            runs.append(run_one(width, args.steps, args.interval))
            print(f"width {width}: N = {runs[-1]['non_embedding']:,}, loss {runs[-1]['val_loss'][-1]:.3f} "
                  f"({runs[-1]['seconds']:.0f} s)", flush=True)
        alpha = power_law(runs)
        result = {"runs": runs, "alpha_N": alpha, "steps": args.steps, "load": os.getloadavg()}
        (out / "scaling_law.json").write_text(json.dumps(result, indent=1))
    budgets = runs[0]["tokens"]
    shown = [0, len(budgets) // 2, len(budgets) - 1]
    lines = ["| width | non-embedding parameters N | " + " | ".join(f"loss at D = {budgets[i]:,}" for i in shown) + " |",
             "| --- | --- | " + " | ".join("---" for _ in shown) + " |"]
    for r in runs:
        lines.append(f"| {r['width']} | {r['non_embedding']:,} | " + " | ".join(f"{r['val_loss'][i]:.3f}" for i in shown)
                     + " |")
    lines += ["", f"GPT, 2 layers, context 64, batch 8, AdamW at a constant 3e-3 after 20 warm-up steps, built-in "
              f"corpus (characters); validation loss (nats per character, {8} batches). Fitted at the largest "
              f"budget: L proportional to N^-{alpha:.2f} (four points of a tiny experiment: an illustration of the "
              "shape, not a measurement of the exponent). Produced by `benchmarks/scaling_law.py`."]
    (out / "scaling_law.md").write_text("\n".join(lines) + "\n")
    save_plot(lambda p: plot(runs, alpha, p), figures / "scaling_law.png")
    print((out / "scaling_law.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
