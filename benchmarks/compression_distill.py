"""Knowledge distillation: a small student GPT trained on a larger teacher's softened outputs vs the
same student trained on the data alone.

Teacher: the model trained by compression_accuracy.py (runs/compression/<corpus>/base; trained
here if missing). Student: 1 layer, width 64. Every student is trained by `compress.distill.distill`
(the one training loop, `train.fit`) with the same TrainConfig: the same steps, seed (so the same
batches), AdamW and schedule; only the loss differs (alpha = 0 is plain cross-entropy).

Writes docs/benchmarks/compression_distill.{json,md} and docs/figures/compression_distill.png
(--out, --figures, --runs: elsewhere).
Usage: python benchmarks/compression_distill.py [--steps 600] [--teacher-steps 600]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _blas_threads import THREADS  # noqa: E402  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402  host-side means of the loss curves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compression_accuracy import (add_output_options, load_corpus, load_or_train_base,  # noqa: E402
                                  model_config, train_config)
from minitransformer.compress.distill import distill  # noqa: E402
from minitransformer.compress.finetune import evaluate  # noqa: E402
from minitransformer.config import to_dict  # noqa: E402
from minitransformer.data.batching import train_val_split  # noqa: E402
from minitransformer.data.tokenizer import CharTokenizer  # noqa: E402
from minitransformer.models.gpt import GPT  # noqa: E402
from minitransformer.tasks import CausalLMTask  # noqa: E402

SETTINGS = [("cross-entropy only", 1.0, 0.0), ("distill T=2, α=0.5", 2.0, 0.5), ("distill T=4, α=0.9", 4.0, 0.9)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="shakespeare")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--teacher-steps", type=int, default=600)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    add_output_options(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    corpus, text = load_corpus(args.data)
    tok = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(tok.encode(text), 0.1)
    tcfg = model_config(tok.vocab_size)
    teacher, _ = load_or_train_base(tcfg, tok, train_ids, args.teacher_steps, args.runs / corpus / "base",
                                    "the teacher")
    teacher_val = evaluate(teacher, val_ids, 16, args.eval_iters)
    scfg = model_config(tok.vocab_size, n_layer=1, d_model=64)
    print(f"teacher: {teacher.num_parameters():,} parameters, val {teacher_val:.4f}")
    rows, curves = [], {}
    # warm-up 50 then cosine to lr/10, AdamW (0.9, 0.99), decay 0.1, batch 16; seed 0 for every
    # student, so every student sees the same batches
    cfg = train_config(args.steps, seed=0, lr=2e-3, warmup=50)
    task = CausalLMTask(train_ids, None, scfg.block_size)
    for name, T, alpha in SETTINGS:
        student = GPT(scfg, seed=0)
        t = time.perf_counter()
        losses = distill(student, teacher, task, cfg, temperature=T, alpha=alpha)["batch_losses"]
        secs = time.perf_counter() - t
        val = evaluate(student, val_ids, 16, args.eval_iters)
        trn = evaluate(student, train_ids, 16, args.eval_iters)
        rows.append({"student": name, "temperature": T, "alpha": alpha, "params": student.num_parameters(),
                     "val_loss": val, "train_loss": trn, "seconds": secs})
        curves[name] = [float(np.mean(losses[i:i + 25])) for i in range(0, len(losses), 25)]
        print(rows[-1])

    args.out.mkdir(parents=True, exist_ok=True)
    info = {"corpus": corpus, "teacher_config": to_dict(tcfg), "student_config": to_dict(scfg),
            "teacher_params": teacher.num_parameters(), "teacher_val": teacher_val, "steps": args.steps,
            "seconds": time.perf_counter() - t0}
    (args.out / "compression_distill.json").write_text(json.dumps({"info": info, "rows": rows, "curves": curves}, indent=1) + "\n")
    lines = [f"Teacher: {tcfg.n_layer} layers, width {tcfg.d_model}, {teacher.num_parameters():,} parameters, "
             f"validation loss {teacher_val:.4f} on {corpus}. Students: 1 layer, width 64, "
             f"{rows[0]['params']:,} parameters, {args.steps} steps of 16×64 tokens, same batches and schedule; "
             "the validation loss is the plain cross-entropy on held-out text.\n",
             "| student | T | α | validation loss | training loss | seconds |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['student']} | {r['temperature']:g} | {r['alpha']:g} | {r['val_loss']:.4f} | "
                     f"{r['train_loss']:.4f} | {r['seconds']:.0f} |")
    (args.out / "compression_distill.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = [r["student"] for r in rows]
    ax.bar(range(len(rows)), [r["val_loss"] for r in rows], color=["C0", "C1", "C2"][:len(rows)])
    ax.axhline(teacher_val, color="k", ls="--", lw=1, label=f"teacher ({teacher.num_parameters():,} params)")
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    lo = min([r["val_loss"] for r in rows] + [teacher_val])
    ax.set_ylim(lo - 0.1, max(r["val_loss"] for r in rows) + 0.05)
    ax.set_ylabel("validation loss (cross-entropy)")
    ax.set_title(f"Students of {rows[0]['params']:,} parameters")
    ax.legend(fontsize=8)
    args.figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figures / "compression_distill.png", bbox_inches="tight", dpi=110)
    print(f"wrote {args.out / 'compression_distill.json'} and .md, {args.figures / 'compression_distill.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
