"""RoBERTa, ALBERT, DistilBERT against BERT, each a switch of one tiny model, measured in one run.

* BERT: MLM + NSP, static masking, --steps.
* RoBERTa: no NSP (packed consecutive sentences), dynamic masking, twice the steps.
* ALBERT: factorised embedding (E=16: V x E + E x C instead of V x C) and one block shared by all
  layers, --steps.
* DistilBERT: half the layers (1), initialised from the BERT teacher's embeddings and every other
  block, trained --steps by distillation (``tasks/distillation.py``: alpha T^2 KL + (1 - alpha) CE
  over the masked positions, T=2, alpha=0.5) from the BERT above.

Columns: parameters; masked-LM loss on the same held-out pair batches (static masks); accuracy on
`module` after fine-tuning with 10% of the labels; pretraining time and its ratio to BERT's (2 CPU
cores shared with other jobs: ratios, not seconds, are the result).

Writes docs/benchmarks/bert_variants.{json,md} and docs/figures/bert_variants.png.
Usage: python benchmarks/bert_variants.py [--steps 800] [--finetune-steps 150]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

from _blas_threads import THREADS  # noqa: F401  pins BLAS threads before numpy loads

from _bert_common import (TINY, add_common_options, common_mlm_loss, corpus_data,  # noqa: E402
                          finetune_accuracy, pretrain, pretrain_config)
from minitransformer.benchmarking.output import save_plot  # noqa: E402
from minitransformer.models.bert import BertModel  # noqa: E402
from minitransformer.tasks.base import Task  # noqa: E402
from minitransformer.tasks.bert_pretraining import BertPretrainingTask  # noqa: E402
from minitransformer.tasks.distillation import DistillationTask  # noqa: E402
from minitransformer.train import fit  # noqa: E402


class MaskedLMOnly(Task):
    """A pretraining task's batches without the NSP labels: (inputs, segments, mlm_targets)."""

    name = "masked-lm"

    def __init__(self, task):
        self.task, self.splits, self.tokenizer = task, task.splits, task.tokenizer

    def batch(self, split, batch_size, rng):
        return self.task.batch(split, batch_size, rng)[:3]


# --8<-- [start:distilbert_student]
def distilbert_student(teacher: BertModel, seed: int = 0) -> BertModel:
    """Half the teacher's layers, no NSP head; embeddings, MLM head and every other block copied."""
    c = dataclasses.replace(teacher.config, n_layer=max(1, teacher.config.n_layer // 2), nsp=False)
    student = BertModel(c, seed=seed)
    teacher_state, state = teacher.state_dict(), student.state_dict()
    for name in state:
        source = name
        if name.startswith("encoder.blocks."):
            i = int(name.split(".")[2])
            source = name.replace(f"encoder.blocks.{i}.", f"encoder.blocks.{2 * i}.", 1)
        state[name] = teacher_state[source]
    student.load_state_dict(state)
    return student
# --8<-- [end:distilbert_student]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800, help="pretraining steps (RoBERTa: twice)")
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--finetune-lr", type=float, default=5e-4)
    p.add_argument("--labels", type=float, default=0.1, help="fraction of the `module` labels")
    add_common_options(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    docs, data = corpus_data(TINY)
    rows = []

    def report(name, model, seconds, note):
        acc, _, _ = finetune_accuracy(model, model.config, data, "module", args.labels, args.finetune_lr,
                                      args.finetune_steps)
        rows.append({"variant": name, "parameters": model.num_parameters(), "mlm_loss": common_mlm_loss(model, data),
                     "accuracy": acc, "seconds": seconds, "note": note})
        print(rows[-1], flush=True)

    bert, _, seconds, _ = pretrain(TINY, data, args.steps)
    report("BERT", bert, seconds, f"MLM + NSP, static masks, {args.steps} steps")
    roberta_cfg = dataclasses.replace(TINY, nsp=False, masking="dynamic")
    roberta, _, seconds, _ = pretrain(roberta_cfg, data, 2 * args.steps)
    report("RoBERTa", roberta, seconds, f"MLM only, dynamic masks, packed sentences, {2 * args.steps} steps")
    albert_cfg = dataclasses.replace(TINY, d_embed=16, share_layers=True)
    albert, _, seconds, _ = pretrain(albert_cfg, data, args.steps)
    report("ALBERT", albert, seconds, f"E=16, all layers share one block, {args.steps} steps")

    student = distilbert_student(bert)
    task = DistillationTask(MaskedLMOnly(BertPretrainingTask(data, nsp=True, masking="static")), bert,
                            temperature=2.0, alpha=0.5)
    t1 = time.perf_counter()
    fit(student, task, pretrain_config(args.steps), progress=False, log=lambda *a: None)
    report("DistilBERT", student, time.perf_counter() - t1,
           f"1 of 2 layers, distilled from BERT (T=2, alpha=0.5), {args.steps} steps")

    base = rows[0]["seconds"]
    for r in rows:
        r["time_ratio"] = r["seconds"] / base
    result = {"model": vars(TINY), "steps": args.steps, "finetune_steps": args.finetune_steps,
              "finetune_lr": args.finetune_lr, "labels": args.labels, "rows": rows, "blas_threads": THREADS,
              "seconds": time.perf_counter() - t0,
              "note": "2 CPU cores shared with other jobs; the time ratio is the result, not the seconds"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bert_variants.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bert_variants.md").write_text(markdown(result))
    save_plot(lambda path: plot(result, path), args.figures / "bert_variants.png")
    print(markdown(result))
    return 0


def markdown(r) -> str:
    lines = [f"Tiny models (C=64, L=2, H=2, T_max=48, V=1000), {r['steps']} pretraining steps of 32 sequences; "
             f"`module` accuracy after {r['finetune_steps']} fine-tuning steps on {r['labels']:.0%} of the labels.",
             "", "| variant | parameters | MLM loss (held out) | `module` accuracy | pretraining time | vs BERT | what changed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for x in r["rows"]:
        lines.append(f"| {x['variant']} | {x['parameters']:,} | {x['mlm_loss']:.3f} | {x['accuracy']:.3f} | "
                     f"{x['seconds']:.0f} s | {x['time_ratio']:.2f}x | {x['note']} |")
    return "\n".join(lines) + "\n"


def plot(r, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for x in r["rows"]:
        ax.scatter(x["parameters"], x["mlm_loss"], s=60)
        ax.annotate(f"{x['variant']} ({x['accuracy']:.2f})", (x["parameters"], x["mlm_loss"]),
                    textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("parameters")
    ax.set_ylabel("held-out masked-LM loss")
    ax.set_title("variants (label: `module` accuracy)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
