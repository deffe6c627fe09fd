"""`minitransformer compress`: compress a trained GPT checkpoint and report what it cost and saved.

    minitransformer compress runs/default --method svd --rank 16
    minitransformer compress runs/default --method lowrank-finetune --energy 0.9 --steps 200
    minitransformer compress runs/default --method int8
    minitransformer compress runs/default --method prune-finetune --sparsity 0.5 --steps 200
    minitransformer compress runs/default --method distill --student-layers 1 --student-width 64
    minitransformer compress runs/default --method lora --rank 4 --steps 200 --merge

Prints a table (method, parameters, size on disk, validation loss, speed) for the original and
the compressed model, and writes the compressed checkpoint (default: CHECKPOINT-METHOD/), which
`minitransformer generate --checkpoint` and `compress.io.load_compressed` load. Every setting is
checked before any model is loaded; a fine-tuning run shows a progress bar (--no-progress: none).
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

METHODS = {
    "svd": "truncated SVD of the chosen Linears (--rank, --energy or --budget)",
    "lowrank-finetune": "truncated SVD, then --steps of fine-tuning of the factors",
    "int8": "int8 symmetric per-channel weights, dequantised matmul (--bits for fewer levels)",
    "int8-dynamic": "int8 weights and per-row int8 activations, integer matmul",
    "fp16": "float16 weights",
    "prune": "magnitude pruning to --sparsity (--scope layer|global)",
    "prune-finetune": "magnitude pruning, then --steps of fine-tuning with the mask kept",
    "heads": "prune the --sparsity fraction of attention heads by gradient importance (+ --steps)",
    "distill": "train a smaller GPT (--student-layers, --student-width) on the checkpoint's soft "
               "targets for --steps (--temperature, --alpha)",
    "lora": "LoRA adapters of --rank on the chosen Linears, --steps of fine-tuning (--merge: fold in)",
}
TARGETS = "attn.qkv,attn.proj,ffn.fc1,ffn.fc2"
TUNED = ("lowrank-finetune", "prune-finetune", "heads", "distill", "lora")   # methods that train
USES_TARGETS = ("svd", "lowrank-finetune", "int8", "int8-dynamic", "fp16", "prune", "prune-finetune", "lora")
DEFAULT_LR = {"distill": 2e-3, "lora": 1e-3}   # a student trains from scratch; adapters start at zero
FINETUNE_LR = 3e-4


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `compress` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "compress", help="compress a GPT checkpoint (SVD, int8, fp16, pruning, distillation, LoRA) and report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods:\n" + "\n".join(f"  {k:17s} {v}" for k, v in METHODS.items()))
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or .safetensors file")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--rank", type=int, help="svd: fixed rank K for every chosen matrix; lora: the adapters' rank (default 4)")
    p.add_argument("--energy", type=float, help="svd: keep this fraction of sum sigma^2 per matrix")
    p.add_argument("--budget", type=float, help="svd: keep this fraction of the chosen matrices' parameters")
    p.add_argument("--sparsity", type=float, default=0.5, help="prune/heads: fraction removed, in [0, 1)")
    p.add_argument("--scope", default="layer", choices=["layer", "global"], help="prune: threshold scope")
    p.add_argument("--bits", type=int, default=8, help="int8: quantization bits 2..8 (default 8)")
    p.add_argument("--targets", default=TARGETS, help="comma-separated layer names (default: %(default)s)")
    p.add_argument("--steps", type=int, default=200, help="training steps (*-finetune, heads, distill, lora)")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {FINETUNE_LR:g}; distill "
                   f"{DEFAULT_LR['distill']:g}, lora {DEFAULT_LR['lora']:g})")
    p.add_argument("--student-layers", type=int, help="distill: the student's blocks (default: half the teacher's)")
    p.add_argument("--student-width", type=int, help="distill: the student's width C (default: half the teacher's)")
    p.add_argument("--student-heads", type=int, help="distill: the student's heads (default: the teacher's)")
    p.add_argument("--temperature", type=float, default=2.0, help="distill: softmax temperature T > 0")
    p.add_argument("--alpha", type=float, help="distill: weight of the soft-target term, in [0, 1] "
                   "(default 0.5); lora: scale numerator, scale = alpha / rank (default: the rank)")
    p.add_argument("--merge", action="store_true", help="lora: fold the adapters into the weights "
                   "before saving (W += (alpha/rank) A B: the plain model's inference cost)")
    p.add_argument("--data", metavar="FILE", help="text to validate (and train) on "
                   "(default: the built-in corpus, like `minitransformer train`)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per batch (default %(default)s)")
    p.add_argument("--eval-iters", type=int, default=20, help="validation batches (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", metavar="DIR", help="where to write the compressed checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while training")
    p.set_defaults(func=run)
    return p


def _finite(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _integer(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int)


# (flag, rule, what is allowed): each setting that is given must satisfy its rule
SETTINGS = [
    ("--batch-size", lambda x: _integer(x) and x >= 1, "an integer >= 1 (sequences per batch)"),
    ("--eval-iters", lambda x: _integer(x) and x >= 1, "an integer >= 1 (validation batches)"),
    ("--steps", lambda x: _integer(x) and x >= 0, "an integer >= 0"),
    ("--lr", lambda x: _finite(x) and x > 0, "a finite number > 0"),
    ("--rank", lambda x: _integer(x) and x >= 1, "an integer >= 1 (and at most min(m, n) of every chosen matrix)"),
    ("--energy", lambda x: _finite(x) and 0 < x <= 1, "a fraction in (0, 1] of sum sigma^2"),
    ("--budget", lambda x: _finite(x) and 0 < x <= 1, "a fraction in (0, 1] of the chosen matrices' parameters"),
    ("--sparsity", lambda x: _finite(x) and 0 <= x < 1, "a fraction in [0, 1)"),
    ("--bits", lambda x: _integer(x) and 2 <= x <= 8, "an integer in [2, 8] (stored in int8)"),
    ("--temperature", lambda x: _finite(x) and x > 0, "a finite number > 0"),
    ("--student-layers", lambda x: _integer(x) and x >= 1, "an integer >= 1"),
    ("--student-width", lambda x: _integer(x) and x >= 1, "an integer >= 1"),
    ("--student-heads", lambda x: _integer(x) and x >= 1, "an integer >= 1"),
]


def check_args(args) -> None:
    """Errors at the door, before any model is loaded: each setting names its flag, the value given
    and what is allowed."""
    if args.method not in METHODS:
        raise ValueError(f"unknown compression method {args.method!r}; expected one of {list(METHODS)}")
    for flag, ok, allowed in SETTINGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and not ok(value):
            raise ValueError(f"{flag} must be {allowed}, got {value!r}")
    if args.method in ("svd", "lowrank-finetune"):
        given = [k for k in ("rank", "energy", "budget") if getattr(args, k) is not None]
        if len(given) != 1:
            raise ValueError(f"--method {args.method} needs exactly one of --rank, --energy, --budget; "
                             f"got {['--' + g for g in given] or 'none'}")
    if args.method in ("distill", "lora") and args.steps < 1:
        raise ValueError(f"--steps must be an integer >= 1 for --method {args.method} (it trains), "
                         f"got {args.steps}")
    if args.alpha is not None:
        if args.method == "distill" and not (_finite(args.alpha) and 0 <= args.alpha <= 1):
            raise ValueError(f"--alpha must be a number in [0, 1] for --method distill (the weight of "
                             f"the soft-target term), got {args.alpha!r}")
        if args.method == "lora" and not (_finite(args.alpha) and args.alpha > 0):
            raise ValueError(f"--alpha must be a finite number > 0 for --method lora (the adapters' "
                             f"scale is alpha / rank), got {args.alpha!r}")
    if args.method in USES_TARGETS and not [t for t in args.targets.split(",") if t.strip()]:
        raise ValueError(f"--targets names no layer ({args.targets!r}); give comma-separated names "
                         f"such as {TARGETS}")


def student_config(teacher_config, args):
    """The distilled student's GPTConfig: the teacher's with --student-layers/-width/-heads
    (defaults: half the blocks, half the width, the same heads), a plain feed-forward width."""
    import dataclasses
    c = teacher_config
    heads = args.student_heads or c.n_head
    width = args.student_width or max(heads, c.d_model // 2 // heads * heads)
    layers = args.student_layers or max(1, c.n_layer // 2)
    if width % heads:
        raise ValueError(f"--student-width {width} must be divisible by --student-heads {heads} "
                         f"(heads split the width; the teacher has {c.n_head} heads of width {c.d_model})")
    return dataclasses.replace(c, n_layer=layers, d_model=width, n_head=heads, d_ff=None, low_rank=None)


def check_against_model(model, args) -> None:
    """The settings that depend on the model: targets that exist, ranks that fit, a valid student."""
    from ..nn.linear import Linear
    from .surgery import matches, slots
    if args.method in USES_TARGETS:
        linears = {n: c for n, _, _, c in slots(model) if isinstance(c, Linear)}
        chosen = {}
        for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
            found = {n: c for n, c in linears.items() if matches(n, [target])}
            if not found:
                raise ValueError(f"--targets: {target!r} matches no Linear of the model; it has "
                                 f"{sorted(linears)[:8]}{' ...' if len(linears) > 8 else ''}")
            chosen.update(found)
        if args.method in ("svd", "lowrank-finetune", "lora") and args.rank is not None:
            name, lin = min(chosen.items(), key=lambda kv: min(kv[1].weight.shape))
            m, n = lin.weight.shape
            if args.rank > min(m, n):
                raise ValueError(f"--rank {args.rank}: rank must lie in [1, min(m, n)] = [1, {min(m, n)}] "
                                 f"for {name} ({m} x {n}), the smallest chosen matrix")
    if args.method == "distill":
        student_config(model.config, args)


def measure(model, val_ids, args) -> dict:
    """Validation loss over --eval-iters batches (the same batches for every model)."""
    from .finetune import evaluate
    return {"val_loss": evaluate(model, val_ids, args.batch_size, args.eval_iters, seed=0)}


def weights_size(model, meta, method) -> int:
    """Bytes of the weights-only checkpoint of `model` (what a deployment would ship)."""
    from .io import save_compressed
    with tempfile.TemporaryDirectory() as tmp:
        return save_compressed(tmp, model, meta, method).stat().st_size


# --8<-- [start:compress]
def compress(model, method: str, args, train_ids=None):
    """Apply `method` to `model`; returns (the compressed model, a dict of details for the report).
    Every method but distill changes `model` in place; distill returns a new, smaller student."""
    from .distill import distill
    from .finetune import finetune
    from .lora import apply_lora, merge_lora, parameter_counts
    from .prune import PruningMask, head_importance, head_mask
    from .quantize import quantize_model
    from .svd import svd_compress
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    lr = args.lr or DEFAULT_LR.get(method, FINETUNE_LR)
    show = {"progress": not args.no_progress, "log": print}         # fit's progress bar and lines
    tune = dict(batch_size=args.batch_size, lr=lr, **show)
    if method in ("svd", "lowrank-finetune"):
        rows = svd_compress(model, targets, rank=args.rank, energy=args.energy, budget=args.budget)
        if method == "lowrank-finetune":
            finetune(model, train_ids, args.steps, **tune)
        return model, {"ranks": {r.name: r.rank for r in rows}}
    if method in ("int8", "int8-dynamic", "fp16"):
        quantize_model(model, method, targets, bits=args.bits)
        return model, {}
    if method in ("prune", "prune-finetune"):
        mask = PruningMask.magnitude(model, args.sparsity, targets, args.scope)
        mask.apply(model)
        if method == "prune-finetune":
            finetune(model, train_ids, args.steps, hooks=[mask.apply], **tune)
        return model, {"sparsity": mask.sparsity()}
    if method == "heads":
        import numpy as np  # host-side batch sampling

        from .. import backend
        from ..data.batching import get_batch
        model.zero_grad()
        rng = np.random.default_rng(0)
        for _ in range(4):                             # accumulate |gradient| scores over 4 batches
            x, y = get_batch(train_ids, args.batch_size, model.config.block_size, rng)
            model.forward(backend.to_device(x, model.device), backend.to_device(y, model.device))
            model.backward()
        scores = head_importance(model, model.config.n_head, "gradient")
        model.zero_grad()
        mask = head_mask(model, model.config.n_head, scores, args.sparsity)
        mask.apply(model)
        finetune(model, train_ids, args.steps, hooks=[mask.apply], **tune)
        return model, {"pruned_heads": mask.pruned_heads}
    if method == "distill":
        import numpy as np  # the training dtype's name

        from ..models.gpt import GPT
        from ..tasks import CausalLMTask
        from ..train import TrainConfig
        student = GPT(student_config(model.config, args), seed=0).to(model.device, model.dtype)
        alpha = 0.5 if args.alpha is None else args.alpha
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=lr, min_lr=lr / 10,
                          warmup=min(50, args.steps // 10), weight_decay=0.1, beta1=0.9, beta2=0.99,
                          seed=0, threads=1, num_samples=0, dtype=str(np.dtype(model.dtype)))
        task = CausalLMTask(train_ids, None, model.config.block_size)    # the teacher's own data
        distill(student, model, task, cfg, args.temperature, alpha, **show)
        return student, {"teacher": model.describe(), "temperature": args.temperature, "alpha": alpha,
                         "steps": args.steps}
    if method == "lora":
        rank = args.rank or 4
        names = apply_lora(model, targets, rank=rank, alpha=args.alpha)
        trainable = parameter_counts(model)["trainable"]
        finetune(model, train_ids, args.steps, **tune)
        if args.merge:
            merge_lora(model)
        return model, {"rank": rank, "alpha": rank if args.alpha is None else args.alpha,
                       "merged": args.merge, "adapted_layers": len(names), "trainable": trainable}
    raise ValueError(f"unknown compression method {method!r}; expected one of {list(METHODS)}")
# --8<-- [end:compress]


def run(args) -> int:
    """Entry point of `minitransformer compress` (args from add_parser)."""
    import copy
    import json

    from .. import backend
    from ..checkpoint import tokenizer_of
    from ..data.batching import train_val_split
    from ..data.corpus import default_corpus, load_text
    from .accounting import model_costs, totals
    from .finetune import forward_speed
    from .io import check_compressible, load_compressed, save_compressed

    check_args(args)
    backend.check_device(args.device)
    model, meta = load_compressed(args.checkpoint, args.device)
    check_compressible(model, args.checkpoint)
    tokenizer = tokenizer_of(meta, args.checkpoint)
    if meta.get("compression"):
        raise ValueError(f"checkpoint {args.checkpoint} is already compressed "
                         f"({meta['compression']['method']}); start from the trained model")
    check_against_model(model, args)
    text = load_text(args.data) if args.data else default_corpus()
    ids = tokenizer.encode(text)
    train_ids, val_ids = train_val_split(ids, meta.get("train_config", {}).get("val_fraction", 0.1))

    original = copy.deepcopy(model)
    t = totals(model_costs(model))
    before = {"params": t["params"], "nonzero": t["nonzero"], "disk": weights_size(model, meta, "none"),
              **measure(model, val_ids, args)}
    model, details = compress(model, args.method, args, train_ids)
    if args.method == "distill":                   # the student is a plain GPT of its own config
        meta = {k: v for k, v in meta.items() if k not in ("val_loss", "best_val_loss")}
        meta["model"] = model.describe()
    t = totals(model_costs(model))
    out = Path(args.out) if args.out else Path(str(Path(args.checkpoint)).rstrip("/") + f"-{args.method}")
    path = save_compressed(out, model, meta, args.method, {"details": json.loads(json.dumps(details, default=str))})
    after = {"params": t["params"], "nonzero": t["nonzero"], "disk": path.stat().st_size,
             **measure(model, val_ids, args)}
    # speed: both models alternately on the same batch, best of 5 each (fair on a busy machine)
    after["tokens_per_s"], relative = forward_speed(model, val_ids, args.batch_size, reference=original)
    before["tokens_per_s"] = after["tokens_per_s"] / relative
    print(report_table([("original", before), (args.method, after)]))
    print(f"\nwrote {path}")
    return 0


def report_table(rows) -> str:
    """Markdown table: method, parameters, non-zero, size on disk, validation loss, speed."""
    lines = ["| method | parameters | non-zero | size on disk | validation loss | speed (tokens/s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows:
        lines.append(f"| {name} | {r['params']:,} | {r['nonzero']:,} | {r['disk'] / 1024:,.1f} KiB | "
                     f"{r['val_loss']:.4f} | {r['tokens_per_s']:,.0f} |")
    return "\n".join(lines)
