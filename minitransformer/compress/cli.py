"""`minitransformer compress`: compress a trained GPT checkpoint and report what it cost and saved.

    minitransformer compress runs/default --method svd --rank 16
    minitransformer compress runs/default --method lowrank-finetune --energy 0.9 --steps 200
    minitransformer compress runs/default --method int8
    minitransformer compress runs/default --method prune-finetune --sparsity 0.5 --steps 200

Prints a table (method, parameters, size on disk, validation loss, speed) for the original and
the compressed model, and writes the compressed checkpoint (default: CHECKPOINT-METHOD/).
"""
from __future__ import annotations

import argparse
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
}
TARGETS = "attn.qkv,attn.proj,ffn.fc1,ffn.fc2"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `compress` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "compress", help="compress a GPT checkpoint (SVD, int8, fp16, pruning) and report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods:\n" + "\n".join(f"  {k:17s} {v}" for k, v in METHODS.items()))
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or .safetensors file")
    p.add_argument("--method", required=True, help=f"one of: {', '.join(METHODS)}")
    p.add_argument("--rank", type=int, help="svd: fixed rank K for every chosen matrix")
    p.add_argument("--energy", type=float, help="svd: keep this fraction of sum sigma^2 per matrix")
    p.add_argument("--budget", type=float, help="svd: keep this fraction of the chosen matrices' parameters")
    p.add_argument("--sparsity", type=float, default=0.5, help="prune/heads: fraction removed, in [0, 1)")
    p.add_argument("--scope", default="layer", choices=["layer", "global"], help="prune: threshold scope")
    p.add_argument("--bits", type=int, default=8, help="int8: quantization bits 2..8 (default 8)")
    p.add_argument("--targets", default=TARGETS, help="comma-separated layer names (default: %(default)s)")
    p.add_argument("--steps", type=int, default=200, help="fine-tuning steps (*-finetune, heads)")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning learning rate")
    p.add_argument("--data", metavar="FILE", help="text to validate (and fine-tune) on "
                   "(default: the built-in corpus, like `minitransformer train`)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-iters", type=int, default=20, help="validation batches")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", metavar="DIR", help="where to write the compressed checkpoint")
    p.set_defaults(func=run)
    return p


def check_args(args) -> None:
    """Errors at the door, before any model is loaded."""
    from .prune import check_sparsity
    if args.method not in METHODS:
        raise ValueError(f"unknown compression method {args.method!r}; expected one of {list(METHODS)}")
    if args.method in ("svd", "lowrank-finetune"):
        given = [k for k in ("rank", "energy", "budget") if getattr(args, k) is not None]
        if len(given) != 1:
            raise ValueError(f"--method {args.method} needs exactly one of --rank, --energy, --budget; "
                             f"got {['--' + g for g in given] or 'none'}")
    if args.method in ("prune", "prune-finetune", "heads"):
        check_sparsity(args.sparsity, "--sparsity")
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")


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
    """Apply `method` to `model` in place; returns a dict of details for the report."""
    from .finetune import finetune
    from .prune import PruningMask, head_importance, head_mask
    from .quantize import quantize_model
    from .svd import svd_compress
    targets = [t for t in args.targets.split(",") if t]
    if method in ("svd", "lowrank-finetune"):
        rows = svd_compress(model, targets, rank=args.rank, energy=args.energy, budget=args.budget)
        if method == "lowrank-finetune":
            finetune(model, train_ids, args.steps, batch_size=args.batch_size, lr=args.lr)
        return {"ranks": {r.name: r.rank for r in rows}}
    if method in ("int8", "int8-dynamic", "fp16"):
        quantize_model(model, method, targets, bits=args.bits)
        return {}
    if method in ("prune", "prune-finetune"):
        mask = PruningMask.magnitude(model, args.sparsity, targets, args.scope)
        mask.apply(model)
        if method == "prune-finetune":
            finetune(model, train_ids, args.steps, batch_size=args.batch_size, lr=args.lr, hooks=[mask.apply])
        return {"sparsity": mask.sparsity()}
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
        finetune(model, train_ids, args.steps, batch_size=args.batch_size, lr=args.lr, hooks=[mask.apply])
        return {"pruned_heads": mask.pruned_heads}
    raise ValueError(f"unknown compression method {method!r}; expected one of {list(METHODS)}")
# --8<-- [end:compress]


def run(args) -> int:
    """Entry point of `minitransformer compress` (args from add_parser)."""
    import copy
    import json

    from .. import backend
    from ..data.batching import train_val_split
    from ..data.corpus import default_corpus, load_text
    from .accounting import model_costs, totals
    from .finetune import forward_speed
    from ..checkpoint import tokenizer_of
    from .io import check_compressible, load_compressed, save_compressed

    check_args(args)
    backend.check_device(args.device)
    model, meta = load_compressed(args.checkpoint, args.device)
    check_compressible(model, args.checkpoint)
    tokenizer = tokenizer_of(meta, args.checkpoint)
    if meta.get("compression"):
        raise ValueError(f"checkpoint {args.checkpoint} is already compressed "
                         f"({meta['compression']['method']}); start from the trained model")
    text = load_text(args.data) if args.data else default_corpus()
    ids = tokenizer.encode(text)
    train_ids, val_ids = train_val_split(ids, meta.get("train_config", {}).get("val_fraction", 0.1))

    original = copy.deepcopy(model)
    t = totals(model_costs(model))
    before = {"params": t["params"], "nonzero": t["nonzero"], "disk": weights_size(model, meta, "none"),
              **measure(model, val_ids, args)}
    details = compress(model, args.method, args, train_ids)
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
