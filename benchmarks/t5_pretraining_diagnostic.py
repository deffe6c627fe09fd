"""Why span-corruption pretraining hurts the text-to-text fine-tuning of `t5_text_to_text.py`:
which part of the pretrained weights does it, and how much pretraining it takes.

The model, tasks, batches, seeds and fine-tuning schedule are those of `t5_text_to_text.py`, at a
smaller budget. One span-corruption run (validated every --pretrain-eval steps, so the loss curve
is printed) gives two starting points: its weights after --snapshot steps and at the end. Every arm
is then fine-tuned for --steps steps at lr 3e-3 from:

* the random initialisation (the baseline of the same run);
* all pretrained weights (after --snapshot steps, and at the end);
* the pretrained blocks with the shared embedding re-initialised (as in the random arm);
* the pretrained shared embedding with the blocks re-initialised.

It also checks, before training, that loading copies every parameter (the relative-bias tables
and the shared embedding included), and records the RMS of each weight group before and after
pretraining. Options change the pretraining text (--pretrain-text: the fine-tuning inputs, or the fine-tuning
task itself as a positive control) and the fine-tuning schedule (--lr, --warmup, --steps).
Writes docs/benchmarks/t5_pretraining_diagnostic[_TAG].{json,md} (--out, --tag: elsewhere).
Usage: python benchmarks/t5_pretraining_diagnostic.py [--pretrain-steps 300] [--snapshot 100] [--steps 600]
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
from minitransformer.data.corpus import default_corpus  # noqa: E402
from minitransformer.models.t5 import T5Config, T5Model  # noqa: E402
from minitransformer.tasks.span_corruption import SpanCorruptionTask  # noqa: E402
from minitransformer.tasks.text_to_text import TextToTextTask  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402

GROUPS = {"shared embedding": lambda n: n == "shared.weight",
          "relative-bias tables": lambda n: "relative_bias" in n,
          "RMSNorm gains": lambda n: ".ln" in n,
          "attention and feed-forward matrices": lambda n: n != "shared.weight" and "relative_bias" not in n
          and ".ln" not in n}


def group_rms(state: dict) -> dict:
    """RMS of the entries of each weight group."""
    out = {}
    for group, member in GROUPS.items():
        values = np.concatenate([v.reshape(-1) for n, v in state.items() if member(n)])
        out[group] = float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))
    return out


def mixed_state(pretrained: dict, fresh: dict, take) -> dict:
    """The pretrained value for names where take(name), else the fresh (random-initialisation) value."""
    return {n: (pretrained[n] if take(n) else fresh[n]) for n in fresh}


PRETRAIN_TEXTS = {"corpus": "span corruption on the built-in corpus",
                  "task-inputs": "span corruption on the fine-tuning inputs",
                  "text-to-text": "the fine-tuning task itself (a control)"}

# name: (label, which pretrained weights (or None), which parameter names take them)
ARMS = {
    "random": ("random initialisation", None, lambda n: False),
    "snapshot": ("all pretrained ({snapshot} steps)", "snapshot", lambda n: True),
    "all": ("all pretrained ({pretrain_steps} steps)", "final", lambda n: True),
    "blocks": ("pretrained blocks, fresh embedding", "final", lambda n: n != "shared.weight"),
    "embedding": ("pretrained embedding, fresh blocks", "final", lambda n: n == "shared.weight"),
    "encoder": ("pretrained encoder stack only", "final", lambda n: n.startswith("encoder.")),
    "decoder": ("pretrained decoder stack only", "final", lambda n: n.startswith("decoder.")),
    "no-cross": ("all pretrained but cross-attention", "final", lambda n: "cross_attn" not in n),
    "cross": ("pretrained cross-attention only", "final", lambda n: "cross_attn" in n),
    "no-bias": ("all pretrained but the relative-bias tables", "final", lambda n: "relative_bias" not in n),
}


def arm(key: str, args):
    """(label, source, take) of an arm name; ValueError names the known ones."""
    if key not in ARMS:
        raise ValueError(f"--arms: unknown arm {key!r}; known: {', '.join(ARMS)}")
    label, source, take = ARMS[key]
    return label.format(snapshot=args.snapshot, pretrain_steps=args.pretrain_steps), source, take


def context_free_losses(span: SpanCorruptionTask, n_train: int = 40, n_val: int = 4) -> dict:
    """Validation cross-entropy of two predictors that never read the encoder input, fitted on
    n_train batches of 256: by target position alone, and by position and the previous target token
    (add-0.01 smoothing). A pretrained model below them uses its input."""
    V, T = span.vocab.vocab_size, span.targets_length
    by_pos, by_prev = np.full((T, V), 0.01), np.full((T, V, V), 0.01)
    rng = np.random.default_rng(1)
    for _ in range(n_train):
        _, tgt_in, tgt_out = span.batch("train", 256, rng)            # (256, T) each
        for t in range(T):
            np.add.at(by_pos[t], tgt_out[:, t], 1)
            np.add.at(by_prev[t], (tgt_in[:, t], tgt_out[:, t]), 1)
    by_pos /= by_pos.sum(-1, keepdims=True)
    by_prev /= by_prev.sum(-1, keepdims=True)
    pos_nll, prev_nll = [], []
    rng = np.random.default_rng(2)
    for _ in range(n_val):
        _, tgt_in, tgt_out = span.batch("val", 256, rng)
        for t in range(T):
            pos_nll.append(-np.log(by_pos[t, tgt_out[:, t]]))
            prev_nll.append(-np.log(by_prev[t, tgt_in[:, t], tgt_out[:, t]]))
    return {"position only": float(np.mean(pos_nll)), "position and previous token": float(np.mean(prev_nll))}


def task_inputs_text(task: TextToTextTask, n_chars: int, seed: int = 0) -> str:
    """The fine-tuning inputs of the training split ("reverse: stream", "add: 417+86", ...), no
    answers, joined by spaces until n_chars characters: in-domain text for span corruption."""
    rng = np.random.default_rng(seed)
    parts, size = [], 0
    while size < n_chars:
        parts.append(task.example(task.tasks[int(rng.integers(len(task.tasks)))], "train", rng)[0])
        size += len(parts[-1]) + 1
    return " ".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--pretrain-eval", type=int, default=50, help="validate the pretraining every this many steps")
    p.add_argument("--snapshot", type=int, default=100, help="also fine-tune from the weights after this many steps")
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps per arm")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    p.add_argument("--pretrain-text", choices=PRETRAIN_TEXTS, default="corpus",
                   help="span corruption on the built-in corpus or on the fine-tuning inputs (no answers); "
                        "text-to-text: the fine-tuning task itself (a positive control)")
    p.add_argument("--lr", type=float, default=3e-3, help="fine-tuning peak lr (min lr: a tenth)")
    p.add_argument("--warmup", type=int, default=50, help="fine-tuning warmup steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tag", default="", help="written as t5_pretraining_diagnostic_TAG.{json,md}")
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = p.parse_args(argv)
    for key in args.arms.split(","):
        arm(key, args)                                           # an unknown arm fails before any training
    t_start = time.perf_counter()
    text = default_corpus()
    t2t = TextToTextTask(text, seed=0)
    span = SpanCorruptionTask(text if args.pretrain_text != "task-inputs" else task_inputs_text(t2t, len(text)),
                              inputs_length=48)
    pre_task = t2t if args.pretrain_text == "text-to-text" else span
    cfg = t2t.adapt(span.adapt(T5Config(n_layer=2, n_dec_layer=2, n_head=4, d_model=64)))
    common = dict(batch_size=args.batch_size, warmup=50, weight_decay=0.0, eval_iters=4, num_samples=0,
                  seed=0, threads=1)
    fresh = T5Model(cfg, seed=0).state_dict()

    # loading copies every parameter: a model of another seed, loaded, equals the source exactly
    probe = T5Model(cfg, seed=1)
    probe.load_state_dict(fresh)
    loaded = probe.state_dict()
    not_copied = [n for n in fresh if not np.array_equal(fresh[n], loaded[n])]
    print(f"load_state_dict: {len(fresh)} tensors, not copied: {not_copied}", flush=True)

    context_free, examples = {}, []
    if pre_task is span:                                         # what span corruption learns and looks like
        context_free = context_free_losses(span)
        src, _, tgt_out = span.batch("val", 3, np.random.default_rng(0))
        examples = [(span.vocab.decode(a), span.vocab.decode(b)) for a, b in zip(src, tgt_out)]
        print("context-free", context_free, "examples", examples, flush=True)
    snapshots = {}

    def keep(step, model):
        if step == args.snapshot:
            snapshots["snapshot"] = model.state_dict()

    pretrained_model = T5Model(cfg, seed=0)
    pre_cfg = TrainConfig(steps=args.pretrain_steps, eval_interval=args.pretrain_eval, lr=3e-3, min_lr=3e-4,
                          **common)
    pre = fit(pretrained_model, pre_task, pre_cfg, progress=False, log=lambda *_: None, callback=keep)
    final = pretrained_model.state_dict()
    pre_curve = [{"step": h["step"], "val_loss": h["val_loss"]} for h in pre["history"]]
    print("pretraining", json.dumps(pre_curve), flush=True)
    rms = {"random init": group_rms(fresh), f"after {args.snapshot} steps": group_rms(snapshots["snapshot"]),
           f"after {args.pretrain_steps} steps": group_rms(final)}
    print("rms", json.dumps(rms), flush=True)

    states = {"snapshot": snapshots["snapshot"], "final": final}
    rows = {}
    rows = {}
    ft_cfg = TrainConfig(steps=args.steps, eval_interval=args.steps // 2, lr=args.lr, min_lr=args.lr / 10,
                         **{**common, "warmup": args.warmup})
    for key in args.arms.split(","):
        label, source, take = arm(key, args)
        model = T5Model(cfg, seed=0)
        model.load_state_dict(mixed_state(states.get(source, fresh), fresh, take))
        t0 = time.perf_counter()
        ft = fit(model, t2t, ft_cfg, progress=False, log=lambda *_: None)
        last = ft["history"][-1]
        rows[label] = {"val_loss": [h["val_loss"] for h in ft["history"]],
                       "steps": [h["step"] for h in ft["history"]],
                       "greedy": {k: v for k, v in last.items() if k.startswith("acc_")},
                       "seconds": time.perf_counter() - t0}
        print(label, json.dumps(rows[label]), flush=True)

    result = {"config": {k: getattr(cfg, k) for k in ("d_model", "n_layer", "n_dec_layer", "n_head", "vocab_size")},
              "pretrain_steps": args.pretrain_steps, "pretrain_text": args.pretrain_text,
              "finetune_lr": args.lr, "finetune_warmup": args.warmup, "snapshot": args.snapshot, "finetune_steps": args.steps,
              "batch_size": args.batch_size, "not_copied_by_load": not_copied, "pretrain_curve": pre_curve,
              "pretrain_baseline": span.baseline(),
              "context_free_losses": context_free, "span_examples": examples, "rms": rms, "rows": rows, "threads": THREADS,
              "seconds": time.perf_counter() - t_start}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "t5_pretraining_diagnostic" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    tasks = list(t2t.tasks)
    steps = next(iter(rows.values()))["steps"]
    lines = [f"T5 of `t5_text_to_text.py` (width {cfg.d_model}, {cfg.n_layer}+{cfg.n_dec_layer} layers); "
             f"{args.pretrain_steps} pretraining steps, {args.steps} fine-tuning steps of batch "
             f"{args.batch_size} per arm (peak lr {args.lr:g}, warmup {args.warmup}); pretraining: "
             f"{PRETRAIN_TEXTS[args.pretrain_text]}; greedy exact match on 64 held-out pairs per task. "
             f"Loading checked: {len(fresh)} tensors, {len(not_copied)} not copied. Shared 2-core CPU, "
             f"{THREADS} BLAS thread; made by `benchmarks/t5_pretraining_diagnostic.py`.", "",
             "| fine-tuning starts from | " + " | ".join(f"val loss, step {s}" for s in steps) + " | "
             + " | ".join(tasks) + " | mean |",
             "| --- | " + " | ".join("---:" for _ in steps) + " | " + " | ".join("---:" for _ in tasks) + " | ---: |"]
    for label, row in rows.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in row["val_loss"]) + " | "
                     + " | ".join(f"{row['greedy'][f'acc_{t}']:.3f}" for t in tasks)
                     + f" | {row['greedy']['acc_mean']:.3f} |")
    lines += ["", f"Pretraining validation loss (uniform guess {span.baseline():.3f}): "
              + ", ".join(f"step {c['step']}: {c['val_loss']:.3f}" for c in pre_curve)
              + ("; predictors that never read the input: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in context_free.items()) if context_free else "") + ".", ""]
    if examples:
        lines += ["Span-corruption validation examples (input -> target; `?` is a newline, outside the "
                  "vocabulary):", "", *[f"    {a!r} -> {b!r}" for a, b in examples], ""]
    lines += ["RMS of the weights:", "", "| weights | " + " | ".join(rms) + " |",
              "| --- | " + " | ".join("---:" for _ in rms) + " |"]
    for group in GROUPS:
        lines.append(f"| {group} | " + " | ".join(f"{r[group]:.3f}" for r in rms.values()) + " |")
    lines += ["", f"Time: {result['seconds']:.0f} s in all."]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
