"""The `minitransformer` command: train, generate, gradcheck, bench, compress.

Every subcommand has --help. Examples:

    minitransformer train                               # the default: small GPT, built-in corpus, CPU
    minitransformer train --data input.txt --device cuda --steps 5000
    minitransformer generate --checkpoint runs/default --prompt "def " --top-p 0.9
    minitransformer gradcheck                           # every registered layer, block and model
"""
from __future__ import annotations

import argparse
import sys


def _add_train(sub):
    p = sub.add_parser("train", help="train a GPT (default: a small model on the built-in corpus)",
                       description="Train a character-level GPT with hand-written backpropagation.")
    p.add_argument("--preset", default="default", help="named configuration (default, tiny, "
                   "shakespeare-cpu, shakespeare-gpu); default: %(default)s")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with [model] and [train] tables")
    p.add_argument("--data", metavar="FILE", help="UTF-8 text file to train on (default: the "
                   "built-in corpus of Python standard-library docstrings)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--steps", type=int, help="number of optimizer steps")
    p.add_argument("--batch-size", type=int, help="sequences per batch")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--attention", help="attention kernel name (see `minitransformer gradcheck --list`)")
    p.add_argument("--seed", type=int, help="random seed (weights, batches)")
    p.add_argument("--workers", type=int, help="data-parallel worker processes on the CPU "
                   "(they split each batch)")
    p.add_argument("--threads", type=int, help="CPU threads that split each batch (default 0: one "
                   "per core when the model is large enough to gain, at most 4; 1: a single thread)")
    p.add_argument("--out", metavar="DIR", help="output directory for checkpoint and metrics "
                   "(default: runs/PRESET)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args):
    from . import backend
    from .config import load_run_config
    from .data.corpus import default_corpus, load_text
    from .train import train

    overrides = {"model": {}, "train": {}}
    for key, section, name in (("steps", "train", "steps"), ("batch_size", "train", "batch_size"),
                               ("lr", "train", "lr"), ("seed", "train", "seed"),
                               ("workers", "train", "workers"), ("threads", "train", "threads"),
                               ("attention", "model", "attention")):
        if getattr(args, key) is not None:
            overrides[section][name] = getattr(args, key)
    model_cfg, train_cfg = load_run_config(args.preset, args.config, overrides)
    backend.check_device(args.device)                     # fail before reading any data
    text = load_text(args.data) if args.data else default_corpus()
    out = args.out or f"runs/{args.preset}"
    print(f"training on {args.data or 'the built-in corpus'} ({len(text):,} characters), "
          f"device {args.device}, output {out}")
    result = train(model_cfg, train_cfg, text, out_dir=out, device=args.device, resume=args.resume,
                   progress=not args.no_progress)
    final = result["history"][-1] if result["history"] else None
    if final:
        print(f"\nfinal validation loss {final['val_loss']:.4f} (unigram baseline "
              f"{result['unigram_baseline']:.4f}); checkpoint in {out}")
    for i, sample in enumerate(result["samples"]):
        print(f"\n--- sample {i + 1} ---\n{sample}")


def _add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a trained checkpoint",
                       description="Generate text with greedy, temperature, top-k or top-p sampling "
                                   "(KV cache on by default).")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="checkpoint directory or file (from `train` or `compress`)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the context at every step")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_generate)


def _run_generate(args):
    import numpy as np  # host side only (seeded init, dtypes, index tables, test inputs); array math uses xp

    from . import backend
    from .compress.io import load_compressed
    from .generate import generate

    model, tokenizer, _ = load_compressed(args.checkpoint, args.device)   # plain or compressed
    ids = tokenizer.encode(args.prompt)[-model.config.block_size:]
    idx = backend.to_device(np.tile(ids, (args.num_samples, 1)).astype(np.int64), args.device)
    out = generate(model, idx, args.max_new_tokens, greedy=args.greedy, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache)
    for i, row in enumerate(backend.to_numpy(out)):
        print(f"--- sample {i + 1} ---\n{tokenizer.decode(row)}")


def _add_gradcheck(sub):
    p = sub.add_parser("gradcheck", help="float64 gradient check of every registered piece",
                       description="Compare every hand-written backward pass with central "
                                   "differences in float64; exit 1 if any fails.")
    p.add_argument("names", nargs="*", help="only these cases (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--list", action="store_true", help="list the registered cases and attention kernels")
    p.set_defaults(func=_run_gradcheck)


def _run_gradcheck(args):
    from . import gradcheck
    from .attention import kernel_names

    cases = gradcheck.registered()
    if args.list:
        print("gradcheck cases:\n  " + "\n  ".join(cases))
        print("attention kernels:\n  " + "\n  ".join(kernel_names()))
        return 0
    names = args.names or list(cases)
    unknown = sorted(set(names) - set(cases))
    if unknown:
        raise ValueError(f"unknown gradcheck case(s) {unknown}; see `minitransformer gradcheck --list`")
    width = max(len(n) for n in names) + 2
    print(f"{'case':<{width}}{'max rel err':>12}  result")
    failed = 0
    for name in names:
        results = cases[name](args.device)
        for r in results if isinstance(results, list) else [results]:
            failed += not r.passed
            print(f"{r.name:<{width}}{r.max_error:>12.2e}  {'pass' if r.passed else 'FAIL'}")
    print(f"\n{failed} failed" if failed else "\nall passed")
    return 1 if failed else 0


def _add_bench(sub):
    p = sub.add_parser("bench", help="run a benchmark (attention scaling, training step)",
                       description="Benchmarks; each writes JSON and Markdown results.")
    p.add_argument("which", choices=["attention", "train-step"], help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (try -- --help)")
    p.set_defaults(func=_run_bench)


def _run_bench(args):
    rest = [a for a in args.rest if a != "--"]
    if args.which == "attention":
        from .benchmarking.attention_scaling import main as bench_main
    else:
        from .benchmarking.train_step import main as bench_main
    return bench_main(rest)


def _add_compress(sub):
    from .compress.cli import add_parser
    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minitransformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    _add_gradcheck(sub)
    _add_bench(sub)
    _add_compress(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f"minitransformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
