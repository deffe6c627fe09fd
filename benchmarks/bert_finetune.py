"""Fine-tuning and transfer: a pretrained tiny BERT against the same model from scratch at 1%, 10%
and 100% of the labels, and a learning-rate sweep that shows forgetting.

1. Pretrain the tiny BERT (C=64, L=2, H=2, T_max=48, V=1000 WordPiece) on the built-in corpus
   (MLM + NSP, static masking) for --pretrain-steps.
2. Fine-tune on `module` (which of 4 stdlib packages a sentence is from) and `adjacent` (does B
   follow A) with the same steps, learning rate and batches for both starts; report the held-out
   accuracy (mean over --seeds label subsets and head initialisations).
3. Learning-rate sweep on `module` at 100% of the labels: accuracy, and the masked-LM validation
   loss of the fine-tuned encoder under the pretrained MLM head (forgetting).

Writes docs/benchmarks/bert_finetune.{json,md} and docs/figures/bert_finetune.png (--out, --figures:
elsewhere). Usage: python benchmarks/bert_finetune.py [--pretrain-steps 1500] [--steps 150]
"""
from __future__ import annotations

import argparse
import json
import time

from _blas_threads import THREADS  # noqa: F401  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402

from _bert_common import (TINY, add_common_options, common_mlm_loss, corpus_data,  # noqa: E402
                          finetune_accuracy, pretrain)
from minitransformer.benchmarking.output import save_plot  # noqa: E402
from minitransformer.transfer import mlm_loss_after_finetuning  # noqa: E402

FRACTIONS = (0.01, 0.1, 1.0)
SWEEP = (1e-4, 1e-3, 3e-3, 1e-2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps (batch 32)")
    p.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate of the comparison")
    p.add_argument("--seeds", type=int, default=2, help="label subsets / head inits per cell")
    p.add_argument("--from-json", action="store_true", help="rewrite the tables and the figure from "
                   "OUT/bert_finetune.json without training")
    add_common_options(p)
    args = p.parse_args(argv)
    if args.from_json:
        write(json.loads((args.out / "bert_finetune.json").read_text()), args)
        return 0
    t0 = time.perf_counter()
    docs, data = corpus_data(TINY)
    bert, pretask, seconds, history = pretrain(TINY, data, args.pretrain_steps)
    config = bert.config
    pre_mlm = common_mlm_loss(bert, data)
    print(f"pretrained {bert.num_parameters():,} parameters for {args.pretrain_steps} steps in {seconds:.0f} s: "
          f"{history[-1]}")

    rows = []
    for task_name in ("module", "adjacent"):
        for fraction in FRACTIONS:
            cell = {"task": task_name, "labels": fraction}
            for start, model in (("pretrained", bert), ("scratch", None)):
                accs = [finetune_accuracy(model, config, data, task_name, fraction, args.lr, args.steps, seed)[0]
                        for seed in range(args.seeds)]
                cell[start] = float(np.mean(accs))
                cell[f"{start}_runs"] = accs
            cell["margin"] = cell["pretrained"] - cell["scratch"]
            rows.append(cell)
            print(cell, flush=True)

    sweep = []
    for lr in SWEEP:
        acc, clf, _ = finetune_accuracy(bert, config, data, "module", 1.0, lr, args.steps, seed=0)
        after = mlm_loss_after_finetuning(bert, clf, _CommonEval(data))
        sweep.append({"lr": lr, "accuracy": acc, "mlm_loss_after": after, "mlm_loss_before": pre_mlm})
        print(sweep[-1], flush=True)

    result = {"model": {k: v for k, v in vars(config).items()}, "parameters": bert.num_parameters(),
              "pretrain_steps": args.pretrain_steps, "pretrain_seconds": seconds, "pretrain_history": history,
              "finetune_steps": args.steps, "finetune_lr": args.lr, "seeds": args.seeds,
              "comparison": rows, "lr_sweep": sweep, "blas_threads": THREADS,
              "seconds": time.perf_counter() - t0,
              "note": "2 CPU cores shared with other jobs; times are not comparable across runs"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bert_finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    write(result, args)
    return 0


def write(result, args) -> None:
    """The Markdown tables (fine-tuning, pretraining curve) and the figure of `result`."""
    (args.out / "bert_finetune.md").write_text(markdown(result))
    (args.out / "bert_pretraining.md").write_text(pretraining_markdown(result))
    save_plot(lambda path: plot(result, path), args.figures / "bert_finetune.png")
    print(markdown(result) + "\n" + pretraining_markdown(result))


def pretraining_markdown(r) -> str:
    lines = [f"Tiny BERT ({r['parameters']:,} parameters) pretrained on the built-in corpus, MLM + NSP, "
             f"batch 32, {r['pretrain_steps']} steps; held-out numbers at each validation.", "",
             "| step | loss (MLM + NSP) | MLM loss | MLM accuracy | NSP accuracy |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for h in r["pretrain_history"]:
        lines.append(f"| {h['step']} | {h['val_loss']:.3f} | {h['mlm_loss']:.3f} | {h['mlm_accuracy']:.3f} | "
                     f"{h['nsp_accuracy']:.3f} |")
    return "\n".join(lines) + "\n"


class _CommonEval:
    """The pretraining task's `metrics` face over the common MLM evaluation batches."""

    def __init__(self, data):
        self.data = data

    def metrics(self, model):
        return {"mlm_loss": common_mlm_loss(model, self.data)}


def markdown(r) -> str:
    h = r["pretrain_history"][-1]
    lines = [f"Tiny BERT ({r['parameters']:,} parameters), pretrained {r['pretrain_steps']} steps "
             f"({r['pretrain_seconds']:.0f} s): MLM loss {h['mlm_loss']:.3f}, MLM accuracy {h['mlm_accuracy']:.3f}, "
             f"NSP accuracy {h.get('nsp_accuracy', float('nan')):.3f}. Fine-tuning: {r['finetune_steps']} steps, "
             f"batch 32, lr {r['finetune_lr']:g}, mean of {r['seeds']} seeds.", "",
             "| task | labels | pretrained | from scratch | margin |", "| --- | ---: | ---: | ---: | ---: |"]
    for c in r["comparison"]:
        lines.append(f"| {c['task']} | {c['labels']:.0%} | {c['pretrained']:.3f} | {c['scratch']:.3f} | "
                     f"{c['margin']:+.3f} |")
    lines += ["", "Learning-rate sweep (`module`, 100% of the labels, pretrained start):", "",
              "| lr | accuracy | MLM loss after | MLM loss before |", "| ---: | ---: | ---: | ---: |"]
    for s in r["lr_sweep"]:
        lines.append(f"| {s['lr']:g} | {s['accuracy']:.3f} | {s['mlm_loss_after']:.3f} | {s['mlm_loss_before']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(r, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for task, style in (("module", "-"), ("adjacent", "--")):
        cells = [c for c in r["comparison"] if c["task"] == task]
        x = [c["labels"] for c in cells]
        a.plot(x, [c["pretrained"] for c in cells], "o" + style, color="C0", label=f"{task}: pretrained")
        a.plot(x, [c["scratch"] for c in cells], "s" + style, color="C1", label=f"{task}: from scratch")
    a.set_xscale("log")
    a.set_xlabel("fraction of the training labels")
    a.set_ylabel("held-out accuracy")
    a.legend(fontsize=8)
    lrs = [s["lr"] for s in r["lr_sweep"]]
    b.plot(lrs, [s["accuracy"] for s in r["lr_sweep"]], "o-", color="C0", label="task accuracy")
    b.set_xscale("log")
    b.set_xlabel("fine-tuning learning rate")
    b.set_ylabel("accuracy", color="C0")
    b2 = b.twinx()
    b2.plot(lrs, [s["mlm_loss_after"] for s in r["lr_sweep"]], "s-", color="C3", label="MLM loss after")
    b2.axhline(r["lr_sweep"][0]["mlm_loss_before"], color="C3", ls=":", label="MLM loss before")
    b2.set_ylabel("masked-LM loss", color="C3")
    b2.legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
