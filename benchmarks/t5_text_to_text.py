"""T5 text-to-text: span-corruption pretraining on the built-in corpus, then one model fine-tuned on
four prefixed tasks (reverse, sort, upper, add); exact-match accuracy per task on held-out words,
greedy and beam search, beside the same model fine-tuned from scratch (no pretraining) in the same run.

Three fine-tuning runs with the same steps, seed and batches: from the span-corruption weights at
the peak learning rate of pretraining (3e-3) and at a lower one (1e-3), and from the random
initialisation (3e-3). Writes docs/benchmarks/t5_text_to_text.{json,md} (--out: elsewhere).
Usage: python benchmarks/t5_text_to_text.py [--pretrain-steps 1000] [--steps 3000] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.beam_search import beam_search  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.models.t5 import T5Config, T5Model  # noqa: E402
from minitransformer.tasks.span_corruption import SpanCorruptionTask  # noqa: E402
from minitransformer.tasks.text_to_text import TextToTextTask, encode_pairs  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402


ARMS = [("span corruption pretraining, then fine-tuning", "pretrained", 3e-3),
        ("span corruption pretraining, then fine-tuning at a lower lr", "pretrained", 1e-3),
        ("fine-tuning only", "random", 3e-3)]


def beam_accuracy(model, task: TextToTextTask, beam: int) -> dict:
    """Exact match of the best beam per task on the held-out pairs."""
    acc = {}
    for name, pairs in task.val_pairs.items():
        src, _, _ = encode_pairs(task.vocab, pairs, task.max_src_len, task.max_tgt_len)
        tokens, _ = beam_search(model, src, beam, max_new_tokens=task.max_tgt_len)
        acc[f"acc_{name}"] = float(np.mean([task.vocab.decode(t[0]) == target
                                            for t, (_, target) in zip(tokens, pairs)]))
    acc["acc_mean"] = float(np.mean(list(acc.values())))
    return acc


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=3000, help="fine-tuning steps")
    p.add_argument("--eval-interval", type=int, default=500, help="fine-tuning: validate every this many steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--inputs-length", type=int, default=48, help="span corruption: encoder input length")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    text = default_corpus()
    span = SpanCorruptionTask(text, inputs_length=args.inputs_length)
    t2t = TextToTextTask(text, seed=0)
    cfg = t2t.adapt(span.adapt(T5Config(n_layer=2, n_dec_layer=2, n_head=4, d_model=64)))
    common = dict(batch_size=args.batch_size, min_lr=3e-4, warmup=50, weight_decay=0.0, eval_iters=4,
                  num_samples=0, seed=0, threads=1)
    pre_cfg = TrainConfig(steps=args.pretrain_steps, eval_interval=args.pretrain_steps, lr=3e-3, **common)
    t0 = time.perf_counter()
    pretrained = T5Model(cfg, seed=0)
    pre = fit(pretrained, span, pre_cfg, progress=False, log=lambda *_: None)
    pretrain_seconds = time.perf_counter() - t0
    print(f"pretrained in {pretrain_seconds:.0f} s: val loss {pre['history'][-1]['val_loss']:.3f}", flush=True)
    rows = {}
    # every arm: the same fine-tuning steps, seed and batches; only the start and the peak lr differ
    for label, start_from, lr in ARMS:
        model = T5Model(cfg, seed=0)
        if start_from == "pretrained":
            model.load_state_dict(pretrained.state_dict())
        ft_cfg = TrainConfig(steps=args.steps, eval_interval=args.eval_interval, lr=lr, min_lr=lr / 10,
                             **{k: v for k, v in common.items() if k != "min_lr"})
        t1 = time.perf_counter()
        ft = fit(model, t2t, ft_cfg, progress=False, log=lambda *_: None)
        t2 = time.perf_counter()
        final = ft["history"][-1]
        rows[label] = {"start": start_from, "lr": lr, "finetune_val_loss": final["val_loss"],
                       "greedy": {k: v for k, v in final.items() if k.startswith("acc_")},
                       "beam": beam_accuracy(model, t2t, args.beam), "finetune_seconds": t2 - t1,
                       "curve": [{"step": h["step"], "val_loss": h["val_loss"], "acc_mean": h["acc_mean"]}
                                 for h in ft["history"]]}
        print(label, json.dumps(rows[label]), flush=True)
    result = {"config": to_dict(cfg), "pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps,
              "batch_size": args.batch_size, "beam_size": args.beam, "span_corruption": span.describe(),
              "tasks": list(t2t.tasks), "held_out_pairs_per_task": len(next(iter(t2t.val_pairs.values()))),
              "threads": THREADS, "seconds": time.perf_counter() - t_start, "rows": rows,
              "pretrain_val_loss": pre["history"][-1]["val_loss"], "pretrain_baseline": span.baseline(),
              "pretrain_seconds": pretrain_seconds,
              "examples": {name: pairs[:2] for name, pairs in t2t.val_pairs.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "t5_text_to_text.json").write_text(json.dumps(result, indent=2) + "\n")
    tasks = list(t2t.tasks)
    lines = [f"T5 ({T5Model(cfg).num_parameters():,} parameters, width {cfg.d_model}, "
             f"{cfg.n_layer}+{cfg.n_dec_layer} layers, character vocabulary of {cfg.vocab_size} with "
             f"{t2t.vocab.n_sentinels} sentinels); {args.pretrain_steps} span-corruption steps, "
             f"{args.steps} fine-tuning steps of batch {args.batch_size}; exact match on "
             f"{result['held_out_pairs_per_task']} held-out pairs per task. Shared 2-core CPU, "
             f"{THREADS} BLAS thread; made by `benchmarks/t5_text_to_text.py`.", "",
             "| start | fine-tuning peak lr | decoding | " + " | ".join(tasks) + " | mean | fine-tune val loss |",
             "| --- | ---: | --- | " + " | ".join("---:" for _ in tasks) + " | ---: | ---: |"]
    for label, row in rows.items():
        for dec in ("greedy", f"beam {args.beam}"):
            acc = row["greedy" if dec == "greedy" else "beam"]
            lines.append(f"| {row['start']} | {row['lr']:g} | {dec} | "
                         + " | ".join(f"{acc[f'acc_{t}']:.3f}" for t in tasks)
                         + f" | {acc['acc_mean']:.3f} | {row['finetune_val_loss']:.3f} |")
    lines += ["", f"Span-corruption validation loss after pretraining: {result['pretrain_val_loss']:.3f} "
              f"(uniform guess {result['pretrain_baseline']:.3f}); {span.describe()}. Time: pretraining "
              f"{pretrain_seconds:.0f} s; fine-tuning " + ", ".join(f"{r['finetune_seconds']:.0f} s"
                                                              for r in rows.values()) + " (in the order above).",
              "", "Validation loss / mean greedy exact match during fine-tuning:", "",
              "| step | " + " | ".join(f"{r['start']}, lr {r['lr']:g}" for r in rows.values()) + " |",
              "| ---: | " + " | ".join("---:" for _ in rows) + " |"]
    for i, point in enumerate(next(iter(rows.values()))["curve"]):
        lines.append(f"| {point['step']} | " + " | ".join(
            f"{r['curve'][i]['val_loss']:.3f} / {r['curve'][i]['acc_mean']:.3f}" for r in rows.values()) + " |")
    (args.out / "t5_text_to_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
