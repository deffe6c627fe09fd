"""T5 text-to-text: span-corruption pretraining on the built-in corpus, then one model fine-tuned on
four prefixed tasks (reverse, sort, upper, add); exact-match accuracy per task on held-out words,
greedy and beam search, beside the same model fine-tuned from scratch (no pretraining) in the same run.

Both fine-tuning runs use the same TrainConfig, seed and batches; the pretrained one starts from the
span-corruption weights. Writes docs/benchmarks/t5_text_to_text.{json,md} (--out: elsewhere).
Usage: python benchmarks/t5_text_to_text.py [--pretrain-steps 1000] [--steps 2000] [--threads 1]
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
from minitransformer import backend  # noqa: E402
from minitransformer.beam_search import beam_search  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.models.t5 import T5Config, T5Model  # noqa: E402
from minitransformer.tasks.span_corruption import SpanCorruptionTask  # noqa: E402
from minitransformer.tasks.text_to_text import TextToTextTask, encode_pairs  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402


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
    p.add_argument("--steps", type=int, default=2000, help="fine-tuning steps")
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
    common = dict(batch_size=args.batch_size, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.0,
                  eval_iters=4, num_samples=0, seed=0, threads=1)
    pre_cfg = TrainConfig(steps=args.pretrain_steps, eval_interval=args.pretrain_steps, **common)
    ft_cfg = TrainConfig(steps=args.steps, eval_interval=args.steps, **common)
    rows = {}
    for label, pretrain in (("span-corruption pretraining, then fine-tuning", True), ("fine-tuning only", False)):
        model = T5Model(cfg, seed=0)
        t0 = time.perf_counter()
        pre = None
        if pretrain:
            pre = fit(model, span, pre_cfg, progress=False, log=lambda *_: None)
        t1 = time.perf_counter()
        ft = fit(model, t2t, ft_cfg, progress=False, log=lambda *_: None)
        t2 = time.perf_counter()
        final = ft["history"][-1]
        greedy = {k: v for k, v in final.items() if k.startswith("acc_")}
        beam = beam_accuracy(model, t2t, args.beam)
        rows[label] = {"pretrain_val_loss": None if pre is None else pre["history"][-1]["val_loss"],
                       "pretrain_baseline": span.baseline(), "finetune_val_loss": final["val_loss"],
                       "greedy": greedy, "beam": beam, "pretrain_seconds": t1 - t0, "finetune_seconds": t2 - t1}
        print(label, json.dumps(rows[label]))
    result = {"config": to_dict(cfg), "pretrain_steps": args.pretrain_steps, "finetune_steps": args.steps,
              "batch_size": args.batch_size, "beam_size": args.beam, "span_corruption": span.describe(),
              "tasks": list(t2t.tasks), "held_out_pairs_per_task": len(next(iter(t2t.val_pairs.values()))),
              "threads": THREADS, "seconds": time.perf_counter() - t_start, "rows": rows,
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
             "| run | decoding | " + " | ".join(tasks) + " | mean | fine-tune val loss |",
             "| --- | --- | " + " | ".join("---:" for _ in tasks) + " | ---: | ---: |"]
    for label, row in rows.items():
        for dec in ("greedy", f"beam {args.beam}"):
            acc = row["greedy" if dec == "greedy" else "beam"]
            lines.append(f"| {label} | {dec} | " + " | ".join(f"{acc[f'acc_{t}']:.3f}" for t in tasks)
                         + f" | {acc['acc_mean']:.3f} | {row['finetune_val_loss']:.3f} |")
    pre_row = rows["span-corruption pretraining, then fine-tuning"]
    lines += ["", f"Span-corruption validation loss after pretraining: {pre_row['pretrain_val_loss']:.3f} "
              f"(uniform guess {pre_row['pretrain_baseline']:.3f}); {span.describe()}.",
              f"Time: pretraining {pre_row['pretrain_seconds']:.0f} s, fine-tuning "
              f"{pre_row['finetune_seconds']:.0f} s (from scratch: "
              f"{rows['fine-tuning only']['finetune_seconds']:.0f} s)."]
    (args.out / "t5_text_to_text.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
