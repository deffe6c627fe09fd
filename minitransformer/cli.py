"""The `minitransformer` command: train, generate, gradcheck, bench, compress, import-hf, export,
fill-mask, finetune.

Every subcommand has --help. Examples:

    minitransformer train                               # the default: small GPT, built-in corpus, CPU
    minitransformer train --model seq2seq               # the encoder-decoder on its synthetic task
    minitransformer train --data input.txt --device cuda --steps 5000
    minitransformer generate --checkpoint runs/default --prompt "def " --top-p 0.9
    minitransformer gradcheck                           # every registered layer, block and model
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCHMARKS = {
    "attention": "attention kernels: time, memory and error against exact attention as N grows",
    "train-step": "training-step throughput against the matmul rate and PyTorch",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("minitransformer")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _families_help() -> str:
    from .models.registry import model_families
    from .presets import PRESETS
    lines = ["model families (--model):"]
    for name, fam in model_families().items():
        presets = ", ".join(PRESETS.get(name, {})) or "none"
        lines.append(f"  {name:9s} {fam.summary}; presets: {presets}")
    return "\n".join(lines)


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (default: a small GPT on the built-in corpus)",
                       description="Train any registered model family with hand-written backpropagation, "
                                   "through the one training loop.",
                       epilog=_families_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model family (default: gpt, or the config file's `family`)")
    p.add_argument("--preset", help="named configuration of that family (default: default)")
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file with family, preset, [model] and [train]")
    p.add_argument("--data", metavar="FILE", help="UTF-8 text file to train on (text models; default: the "
                   "built-in corpus of Python standard-library docstrings); for vit the image set: digits "
                   "(default, needs scikit-learn) or shapes (generated)")
    p.add_argument("--task", help="a prompting task instead of the family's default one (its preset is the "
                   "default --preset): " + ", ".join(_prompt_task_names()))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--steps", type=int, help="total number of optimizer steps (on --resume too: the run "
                   "continues up to this step)")
    p.add_argument("--batch-size", type=int, help="sequences per batch")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--attention", help="attention kernel name, GPT only (see `minitransformer gradcheck --list`)")
    p.add_argument("--seed", type=int, help="random seed (weights, batches, dropout)")
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)     # gone: refused with a pointer to mpiexec
    p.add_argument("--zero", action="store_true", help="under mpiexec: shard AdamW's moments over the ranks "
                   "(ZeRO-1)")
    p.add_argument("--checkpoint-activations", action="store_true", help="recompute each block's forward in "
                   "its backward: less memory, about a third more compute")
    p.add_argument("--threads", type=int, help="CPU threads that split each batch (default 0: one "
                   "per core when the model is large enough to gain, at most 4; 1: a single thread)")
    p.add_argument("--out", metavar="DIR", help="output directory for checkpoints and metrics "
                   "(default: runs/PRESET, or runs/MODEL-PRESET for other families)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _prompt_task_names() -> list[str]:
    from .tasks.prompting import prompt_task_names
    return prompt_task_names()


def _task_defaults(args):
    """--task NAME: the model family it trains (when --model is not given) and its preset."""
    from .presets import PRESETS
    from .tasks.prompting import model_family_of
    model = args.model or model_family_of(args.task)
    preset = args.preset or (args.task if args.task in PRESETS.get(model, {}) else None)
    return model, preset


def _run_train(args):
    from .generate import check_sampling, sample_texts
    from .presets import CORPUS_FAMILIES, IMAGE_FAMILIES, TEXT_FAMILIES, load_run_config, start_run

    overrides = {"model": {}, "train": {}}
    for key, section in (("steps", "train"), ("batch_size", "train"), ("lr", "train"), ("seed", "train"),
                         ("threads", "train"), ("attention", "model")):
        if getattr(args, key) is not None:
            overrides[section][key] = getattr(args, key)
    if args.workers is not None:
        raise ValueError("--workers is gone: data-parallel processes are MPI ranks now. Run "
                         "`mpiexec -n N python -m minitransformer train ...` (pip install 'minitransformer[distributed]'); "
                         "on one machine --threads N splits each batch over threads")
    if args.zero:
        overrides["train"]["zero_stage"] = 1
    if args.checkpoint_activations:
        overrides["train"]["checkpoint_activations"] = True
    from .distributed import world
    world(args.device)                         # under mpiexec: join the ranks (and pick this rank's GPU)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: choose one")
    if args.task:
        args.model, args.preset = _task_defaults(args)
    family, model_cfg, train_cfg = load_run_config(args.model, args.preset, args.config, overrides)
    if family in TEXT_FAMILIES and train_cfg.num_samples:   # sampling settings checked before training
        check_sampling(train_cfg.sample_tokens, train_cfg.temperature, train_cfg.top_k or None, None,
                       num_samples=train_cfg.num_samples)
    preset = args.preset or "default"
    out = args.out or (f"runs/{preset}" if family == "gpt" else f"runs/{family}-{preset}")
    source = args.data or ("the built-in corpus" if family in CORPUS_FAMILIES else "its synthetic task")
    if family in IMAGE_FAMILIES:
        source = f"the image set {args.data or 'digits'}"
    if family == "t5":
        source = f"text-to-text tasks on the words of {args.data or 'the built-in corpus'}"
    source = f"task {args.task}" if args.task else source
    if world(args.device).is_root:
        print(f"training {family} on {source}, device {args.device}, output {out}")
    result = start_run(family, model_cfg, train_cfg, args.data, out_dir=out, device=args.device,
                       resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                       task=args.task)
    if not world(args.device).is_root:         # rank 0 reports for all ranks
        return
    final = result["history"][-1] if result["history"] else None
    if final:
        baseline = result["baseline"]
        extra = f" (baseline {baseline:.4f})" if baseline is not None else ""
        print(f"\nfinal validation loss {final['val_loss']:.4f}{extra}; best {result['best_val_loss']:.4f}; "
              f"checkpoints in {out}")
        if "test_accuracy" in final:
            print(f"test accuracy {final['test_accuracy']:.4f} (the final model, every test image)")
    tokenizer = getattr(result["task"], "tokenizer", None)
    if result["model"].can_generate and tokenizer is not None:
        samples = sample_texts(result["model"], tokenizer, train_cfg.num_samples, train_cfg.sample_tokens,
                               train_cfg.temperature, train_cfg.top_k or None, seed=train_cfg.seed)
        for i, sample in enumerate(samples):
            print(f"\n--- sample {i + 1} ---\n{sample}")


def _add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a trained checkpoint",
                       description="Generate text with greedy, temperature, top-k or top-p sampling "
                                   "(KV cache on by default).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="run directory (its best checkpoint) or .safetensors file (from `train` or `compress`)")
    p.add_argument("--prompt", default="\n", help="text to continue (must not be empty)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate per sample")
    p.add_argument("--temperature", type=float, default=0.8, help="divides the logits; lower is more "
                   "conservative (> 0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only within the smallest set of "
                   "tokens whose probability reaches p (nucleus), in (0, 1]")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples to print")
    p.add_argument("--no-cache", action="store_true", help="recompute the context at every step")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling")
    p.set_defaults(func=_run_generate)


def _run_generate(args):
    import numpy as np  # host side only: the prompt's token ids

    from . import backend
    from .checkpoint import tokenizer_of
    from .compress.io import load_compressed
    from .generate import check_can_generate, check_sampling, generate

    check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.greedy, args.num_samples)
    if not args.prompt:
        raise ValueError("--prompt is empty: give at least one character to continue (the default is a newline)")
    backend.check_device(args.device)
    model, meta = load_compressed(args.checkpoint, args.device)   # plain or compressed, any family
    check_can_generate(model)
    tokenizer = tokenizer_of(meta, args.checkpoint)
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
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
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
    p = sub.add_parser("bench", help="run a benchmark (attention scaling, training step); alone, list them",
                       description="Benchmarks; each writes JSON and Markdown results (and a plot with "
                                   "matplotlib) into --out, by default the current directory, and says "
                                   "where. The documentation's tables are rewritten only with an explicit "
                                   "`-- --out docs/benchmarks` (as benchmarks/*.py pass it).",
                       epilog="benchmarks:\n" + "\n".join(f"  {k:11s} {v}" for k, v in BENCHMARKS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", nargs="?", choices=list(BENCHMARKS), help="which benchmark (none: list them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark (try -- --help)")
    p.set_defaults(func=_run_bench)


def _run_bench(args):
    if args.which is None:
        print("benchmarks (run `minitransformer bench NAME -- --help` for a benchmark's options):")
        for name, summary in BENCHMARKS.items():
            print(f"  {name:11s} {summary}")
        return 0
    rest = [a for a in args.rest if a != "--"]
    if args.which == "attention":
        from .benchmarking.attention_scaling import main as bench_main
    else:
        from .benchmarking.train_step import main as bench_main
    return bench_main(rest)


def _add_compress(sub):
    from .compress.cli import add_parser
    add_parser(sub)


def _add_interop(sub):
    from .interop.cli import add_parser
    add_parser(sub)
def _add_bert(sub):
    from .bert_cli import add_parsers
    add_parsers(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minitransformer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"minitransformer {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    _add_gradcheck(sub)
    _add_bench(sub)
    _add_compress(sub)
    _add_interop(sub)
    _add_bert(sub)
    return parser


def _raised_by_the_package(err: BaseException) -> bool:
    """True when the innermost frame of the traceback is minitransformer's own code: a check at the
    door that raised on purpose. A ValueError from inside NumPy (a broadcasting bug, say) is not."""
    tb = err.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    package = Path(__file__).resolve().parent
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(package)
    except (OSError, ValueError):
        return False


def main(argv=None) -> int:
    from . import backend
    from .checkpoint import CheckpointError
    from .train import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print(f"minitransformer {args.command}: interrupted", file=sys.stderr)
        return 130
    except (CheckpointError, TrainingDiverged, backend.DeviceError) as err:
        print(f"minitransformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:                        # a file that cannot be read or written: the environment
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        print(f"minitransformer {args.command}: error:{where} {err.strerror or err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError) as err:
        if not _raised_by_the_package(err):
            raise                                 # a bug: show the whole traceback
        print(f"minitransformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
