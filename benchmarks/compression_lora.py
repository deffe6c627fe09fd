"""LoRA: adapt a GPT pretrained on one corpus to another, training only low-rank adapters.

Pretrains the benchmark GPT on the built-in corpus (Python standard-library docstrings; cached in
runs/compression/default/base), then fine-tunes it on tiny Shakespeare (read from ../shared/data;
its characters are all in the pretrained vocabulary) with
* LoRA adapters of rank r on every block Linear (only the adapters train; alpha = 2r),
* full fine-tuning of every parameter (the baseline),
for the same number of steps, and reports trainable parameters, Shakespeare validation loss, the
loss on the original corpus afterwards (forgetting), seconds per step, and checks that merging the
adapters gives the same loss.

Every model trains through the one training loop (`train.fit`; fine-tuning through
`compress.finetune.finetune`). Writes docs/benchmarks/compression_lora.{json,md} and
docs/figures/compression_lora.png (--out, --figures, --runs: elsewhere).
Usage: python benchmarks/compression_lora.py [--pretrain-steps 600] [--steps 300] [--ranks 1,4,16]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compression_accuracy import add_output_options, load_corpus, load_or_train_base, model_config  # noqa: E402
from minitransformer.compress.finetune import evaluate, finetune  # noqa: E402
from minitransformer.compress.lora import apply_lora, merge_lora, parameter_counts  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.batching import train_val_split  # noqa: E402
from minitransformer.data.tokenizer import CharTokenizer  # noqa: E402

TARGETS = ("attn.qkv", "attn.proj", "ffn.fc1", "ffn.fc2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ranks", default="1,4,16")
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    add_output_options(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    _, source = load_corpus("default")
    target_name, target = load_corpus("shakespeare")
    tok = CharTokenizer.from_text(source + "\n")
    missing = sorted(set(target) - set(tok.chars))
    if missing:
        print(f"dropping {len(missing)} characters of {target_name} unknown to the pretrained vocabulary: {missing}")
        target = "".join(c for c in target if c in tok.stoi)
    src_train, src_val = train_val_split(tok.encode(source), 0.1)
    tgt_train, tgt_val = train_val_split(tok.encode(target), 0.1)
    cfg = model_config(tok.vocab_size)

    base, _ = load_or_train_base(cfg, tok, src_train, args.pretrain_steps, args.runs / "default" / "base",
                                 "the model pretrained on the built-in corpus")

    def losses(m):
        return {"target_val": evaluate(m, tgt_val, 16, args.eval_iters), "source_val": evaluate(m, src_val, 16, args.eval_iters)}

    rows = [{"method": "pretrained, no fine-tuning", "rank": None, **parameter_counts(base), **losses(base),
             "s_per_step": 0.0}]
    rows[0].update(trainable=0, frozen=rows[0]["total"], fraction_trainable=0.0)
    print(rows[0])
    curves = {}
    settings = [("full fine-tuning", None)] + [(f"LoRA r={r}", int(r)) for r in args.ranks.split(",") if r]
    for name, rank in settings:
        m = copy.deepcopy(base)
        lr = 1e-3
        if rank is not None:
            apply_lora(m, TARGETS, rank=rank, alpha=2 * rank)
            lr = 3e-3                                  # adapters start at zero and like a larger step
        counts = parameter_counts(m)
        curve = []

        def record(step, model):
            if step % 50 == 0:
                curve.append((step, evaluate(model, tgt_val, 16, 5, seed=step)))
        t = time.perf_counter()
        finetune(m, tgt_train, args.steps, batch_size=16, lr=lr, warmup=20, callback=record)
        secs = (time.perf_counter() - t) / args.steps
        row = {"method": name, "rank": rank, **counts, **losses(m), "s_per_step": secs}
        if rank is not None:
            before_merge = row["target_val"]
            merge_lora(m)
            row["target_val_merged"] = evaluate(m, tgt_val, 16, args.eval_iters)
            row["merge_difference"] = abs(row["target_val_merged"] - before_merge)
        rows.append(row)
        curves[name] = curve
        print({k: v for k, v in row.items() if k != "curve"})

    args.out.mkdir(parents=True, exist_ok=True)
    info = {"source": "built-in corpus", "target": target_name, "config": to_dict(cfg),
            "pretrain_steps": args.pretrain_steps, "steps": args.steps, "seconds": time.perf_counter() - t0}
    (args.out / "compression_lora.json").write_text(json.dumps({"info": info, "rows": rows, "curves": curves}, indent=1) + "\n")
    lines = [f"GPT ({cfg.n_layer} layers, width {cfg.d_model}) pretrained {args.pretrain_steps} steps on the built-in "
             f"corpus, then fine-tuned {args.steps} steps (batch 16×64) on {target_name}. *Target* = {target_name} "
             "validation loss, *source* = built-in corpus validation loss after fine-tuning (forgetting). "
             "LoRA on qkv, proj, fc1, fc2 with alpha = 2r; *merged* = the same model after W += (alpha/r)·AB.\n",
             "| method | trainable parameters | % of model | target val loss | merged | source val loss | s/step |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        merged = f"{r['target_val_merged']:.4f}" if "target_val_merged" in r else "–"
        lines.append(f"| {r['method']} | {r['trainable']:,} | {100 * r['trainable'] / r['total']:.2f} | "
                     f"{r['target_val']:.4f} | {merged} | {r['source_val']:.4f} | {r['s_per_step']:.3f} |")
    (args.out / "compression_lora.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curve in curves.items():
        ax.plot([c[0] for c in curve], [c[1] for c in curve], "o-", ms=3, label=name)
    ax.axhline(rows[0]["target_val"], color="k", ls="--", lw=1, label="pretrained, zero-shot")
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(f"{target_name} validation loss")
    ax.set_title("LoRA vs full fine-tuning")
    ax.legend(fontsize=8)
    args.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figures / "compression_lora.png", bbox_inches="tight", dpi=110)
    print(f"wrote {args.out / 'compression_lora.json'} and .md, {args.figures / 'compression_lora.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
