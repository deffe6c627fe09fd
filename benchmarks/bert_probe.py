"""What the pretrained encoder's features are worth: head-only fine-tuning (a linear probe) of the
tiny BERT of bert_finetune.py against the same model at its random initialisation.

The encoder is frozen (its parameters get requires_grad = False, so the optimizer leaves them
alone) and only the new classification head trains, on `module` with 1% and 100% of the labels.
If pretraining had produced features that separate the four packages, the probe on the pretrained
encoder would beat the probe on random features; the comparison tells whether a fine-tuning result
comes from the features or from the optimisation.

The pretrained model is the one bert_finetune.py trains (same configuration, seed and steps, so the
same weights); it is kept in --runs and reused. Writes docs/benchmarks/bert_probe.{json,md}.
Usage: python benchmarks/bert_probe.py [--pretrain-steps 1500] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from _blas_threads import THREADS  # noqa: F401  pins BLAS threads before numpy loads

from _bert_common import (ROOT, TINY, add_common_options, corpus_data, finetune_config,  # noqa: E402
                          pretrain_config)
from minitransformer.checkpoint import load_model  # noqa: E402
from minitransformer.models.bert import BertModel  # noqa: E402
from minitransformer.tasks.bert_pretraining import BertPretrainingTask  # noqa: E402
from minitransformer.tasks.finetune_tasks import make_finetune_task  # noqa: E402
from minitransformer.train import fit  # noqa: E402
from minitransformer.transfer import classifier_from_pretrained, finetune  # noqa: E402


def pretrained_bert(data, steps: int, runs: Path):
    """The tiny BERT pretrained for `steps` (read from `runs` when a finished run is there)."""
    out = runs / f"tiny-{steps}"
    if (out / "checkpoint.safetensors").is_file():
        model, meta = load_model(out, which="last")
        if meta.get("step") == steps:
            return model
    task = BertPretrainingTask(data, nsp=TINY.nsp, masking=TINY.masking, seed=0)
    model = BertModel(task.adapt(TINY), seed=0)
    fit(model, task, pretrain_config(steps), out, overwrite=True, progress=False, log=lambda *a: None)
    return model


def probe(encoder_source, config, data, fraction: float, steps: int, lr: float, seed: int = 0) -> float:
    """Held-out accuracy of a head trained on a frozen encoder (`encoder_source` None: random)."""
    task = make_finetune_task("module", data, fraction, seed=seed)
    model = classifier_from_pretrained(encoder_source, config, task.n_classes, seed=seed + 100)
    for name, p in model.named_parameters():
        p.requires_grad = not name.startswith("encoder.")
    return finetune(model, task, finetune_config(steps, lr, seed))["history"][-1]["accuracy"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=300, help="head-only training steps")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-bert")
    add_common_options(p)
    args = p.parse_args(argv)
    _, data = corpus_data(TINY)
    bert = pretrained_bert(data, args.pretrain_steps, args.runs)
    rows = []
    for fraction in (0.01, 1.0):
        row = {"labels": fraction, "pretrained": probe(bert, bert.config, data, fraction, args.steps, args.lr),
               "random": probe(None, bert.config, data, fraction, args.steps, args.lr)}
        rows.append(row)
        print(row, flush=True)
    result = {"pretrain_steps": args.pretrain_steps, "steps": args.steps, "lr": args.lr, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bert_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Head-only training ({args.steps} steps, lr {args.lr:g}, encoder frozen) on `module`; the tiny BERT "
             f"pretrained {args.pretrain_steps} steps against the same architecture at its random initialisation.",
             "", "| labels | frozen pretrained encoder | frozen random encoder |", "| ---: | ---: | ---: |"]
    lines += [f"| {r['labels']:.0%} | {r['pretrained']:.3f} | {r['random']:.3f} |" for r in rows]
    (args.out / "bert_probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
