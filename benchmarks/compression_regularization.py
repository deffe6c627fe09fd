"""Does a low-rank factorisation regularise? A small-data experiment.

The same GPT, dense and with every block Linear factorised at rank k (GPTConfig.low_rank), trained
with the same optimiser and steps on a small slice of tiny Shakespeare (default: the first 20,000
characters, seen about 40 times), validated on the standard held-out last 10% of the file. Records
training and validation loss along the way; the claim predicts a smaller train/validation gap and
a better validation loss for the low-rank models. We report what happens, either way.

Every model trains through `train.fit` (compression_accuracy.train_base). Writes
docs/benchmarks/compression_regularization.{json,md} and docs/figures/compression_regularization.png
(--out, --figures: elsewhere).
Usage: python benchmarks/compression_regularization.py [--chars 20000] [--steps 800] [--ranks 4,16]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402  host-side harness (means over seeds)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compression_accuracy import add_output_options, load_corpus, model_config, train_base  # noqa: E402
from minitransformer.compress.finetune import evaluate  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.batching import train_val_split  # noqa: E402
from minitransformer.data.tokenizer import CharTokenizer  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--chars", type=int, default=20000, help="training characters (the small data)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--ranks", default="4,16")
    p.add_argument("--seeds", default="0,1,2", help="weight and batch seeds; results are mean ± std over them")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-iters", type=int, default=10)
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    add_output_options(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    corpus, text = load_corpus(args.data)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    full_train, val_ids = train_val_split(ids, 0.1)
    small = full_train[:args.chars]
    runs = []
    seeds = [int(x) for x in args.seeds.split(",") if x]
    for rank in [None] + [int(r) for r in args.ranks.split(",") if r]:
        for seed in seeds:
            cfg = model_config(tok.vocab_size, low_rank=rank)
            curve = []

            def record(step, m):
                if step % args.eval_every == 0 or step == args.steps:
                    tr = evaluate(m, small, 16, args.eval_iters, seed=step)
                    va = evaluate(m, val_ids, 16, args.eval_iters, seed=step)
                    curve.append({"step": step, "train": tr, "val": va})
                    print(f"rank {rank or 'full'} seed {seed}: step {step:4d}  train {tr:.4f}  val {va:.4f}  "
                          f"gap {va - tr:+.4f}")
            model, _, seconds, _ = train_base(cfg, small, args.steps, seed=seed, lr=2e-3, warmup=50,
                                              callback=record)
            best = min(curve, key=lambda c: c["val"])
            runs.append({"rank": rank, "seed": seed, "params": model.num_parameters(), "curve": curve,
                         "final": curve[-1], "best_val": best["val"], "best_step": best["step"],
                         "seconds": seconds})

    args.out.mkdir(parents=True, exist_ok=True)
    info = {"corpus": corpus, "train_chars": len(small), "val_tokens": len(val_ids), "steps": args.steps,
            "tokens_seen": args.steps * 16 * 64, "config": to_dict(model_config(tok.vocab_size)),
            "seconds": time.perf_counter() - t0}
    (args.out / "compression_regularization.json").write_text(json.dumps({"info": info, "runs": runs}, indent=1) + "\n")
    lines = [f"Trained on the first {len(small):,} characters of {corpus} ({args.steps} steps of 16×64 tokens, "
             f"≈{args.steps * 16 * 64 / len(small):.0f} passes), validated on the held-out last 10% "
             f"({len(val_ids):,} characters). Losses over {args.eval_iters} batches of 16; mean ± standard "
             f"deviation over {len(seeds)} seed(s) ({args.seeds}) of weights and batches.\n",
             "| model | parameters | final train | final validation | gap (val − train) | best validation | at step |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def ms(values):
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"
    for rank in dict.fromkeys(r["rank"] for r in runs):
        sel = [r for r in runs if r["rank"] == rank]
        label = "dense" if rank is None else f"low-rank k={rank}"
        lines.append(f"| {label} | {sel[0]['params']:,} | {ms([r['final']['train'] for r in sel])} | "
                     f"{ms([r['final']['val'] for r in sel])} | {ms([r['final']['val'] - r['final']['train'] for r in sel])} | "
                     f"{ms([r['best_val'] for r in sel])} | {', '.join(str(r['best_step']) for r in sel)} |")
    (args.out / "compression_regularization.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for rank, color in zip(dict.fromkeys(r["rank"] for r in runs), ("C0", "C1", "C2", "C3")):
        sel = [r for r in runs if r["rank"] == rank]
        label = "dense" if rank is None else f"low-rank k={rank}"
        steps = [c["step"] for c in sel[0]["curve"]]
        for key, style, what in (("train", "--", "train"), ("val", "-", "validation")):
            mean = np.mean([[c[key] for c in r["curve"]] for r in sel], axis=0)
            ax.plot(steps, mean, style, color=color, label=f"{label} {what}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"Small data ({len(small):,} characters): train vs validation")
    ax.legend(fontsize=8)
    args.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figures / "compression_regularization.png", bbox_inches="tight", dpi=110)
    print(f"wrote {args.out / 'compression_regularization.json'} and .md, "
          f"{args.figures / 'compression_regularization.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
