"""`minitransformer import-hf` and `minitransformer export`: Hugging Face folders in, Hugging Face
folders and ONNX files out.

    minitransformer import-hf path/to/gpt2-folder --out runs/gpt2
    minitransformer generate --checkpoint runs/gpt2 --prompt "Hello" --greedy
    minitransformer import-hf path/to/bert-folder --out runs/bert             # + vocab.txt
    minitransformer fill-mask --checkpoint runs/bert --text "the [MASK] of the file."
    minitransformer export --checkpoint runs/default --format hf              # -> runs/default/hf/
    minitransformer export --checkpoint runs/default --format onnx            # -> runs/default/model.onnx
    minitransformer export --checkpoint runs/default --format onnx --quantize int8
    minitransformer export --checkpoint runs/default --format onnx --kv-cache     # for token-by-token decoding

Nothing is downloaded: the folder must hold config.json and model.safetensors (and vocab.json +
merges.txt for GPT-2's tokenizer, vocab.txt for BERT's). An ONNX export is checked at once: onnxruntime runs it on a
probe input and the largest logit difference from minitransformer's own forward is printed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMATS = {"hf": "a Hugging Face folder (config.json, model.safetensors, vocab.json + merges.txt or vocab.txt)",
           "onnx": "an ONNX file (opset 17) for onnxruntime"}


def add_parser(subparsers) -> None:
    """Add the `import-hf` and `export` subcommands to an argparse subparsers object."""
    p = subparsers.add_parser("import-hf", help="import a local Hugging Face folder (GPT-2, BERT) as a checkpoint",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="DIR", help="Hugging Face model folder: config.json + model.safetensors")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write the checkpoint into")
    p.add_argument("--overwrite", action="store_true", help="replace a checkpoint already in --out")
    p.set_defaults(func=run_import)

    p = subparsers.add_parser("export", help="export a checkpoint to Hugging Face or ONNX",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="formats:\n" + "\n".join(f"  {k:5s} {v}" for k, v in FORMATS.items()))
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="run directory (its best checkpoint) or .safetensors file")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="what to write")
    p.add_argument("--out", metavar="PATH", help="output folder (hf; default CHECKPOINT/hf) or file "
                   "(onnx; default CHECKPOINT/model.onnx, model-int8.onnx, model-kv.onnx, model-int8-kv.onnx)")
    p.add_argument("--quantize", choices=["int8"], help="onnx: int8 per-channel weights stored with "
                   "DequantizeLinear (QDQ), from compress.quantize")
    p.add_argument("--kv-cache", action="store_true", help="onnx: the graph also takes and returns each "
                   "block's keys and values (past_key.i, present_key.i, ...) for one-token decoding steps")
    p.set_defaults(func=run_export)


def run_import(args) -> int:
    from ..checkpoint import LAST, holds_run
    from .hf_import import import_hf_checkpoint

    if holds_run(args.out) and not args.overwrite:
        raise ValueError(f"{args.out} already holds a run; choose another --out or pass --overwrite")
    path = import_hf_checkpoint(args.folder, args.out)
    print(f"imported {args.folder} -> {path}")
    if (Path(args.out) / LAST) == path:
        model_type = json.loads((Path(args.folder) / "config.json").read_text(encoding="utf-8"))["model_type"]
        print(f"try: minitransformer fill-mask --checkpoint {args.out} --text 'the [MASK] of it.'"
              if model_type == "bert"
              else f"try: minitransformer generate --checkpoint {args.out} --prompt 'Hello' --greedy")
    return 0


def _run_dir(checkpoint: str) -> Path:
    path = Path(checkpoint)
    return path.parent if path.suffix == ".safetensors" else path


def run_export(args) -> int:
    from ..compress.io import load_compressed

    if (args.quantize or args.kv_cache) and args.format != "onnx":
        raise ValueError("--quantize and --kv-cache apply to --format onnx only")
    if args.format == "onnx":
        _require_onnx()
    model, meta = load_compressed(args.checkpoint, "cpu")
    tokenizer = None
    if meta.get("tokenizer"):
        from ..checkpoint import tokenizer_of
        tokenizer = tokenizer_of(meta, args.checkpoint)
    if args.format == "hf":
        from .hf_export import export_hf
        out = Path(args.out) if args.out else _run_dir(args.checkpoint) / "hf"
        written = export_hf(model, tokenizer, out)
        print(f"wrote {', '.join(p.name for p in written)} to {out}")
        if tokenizer is not None and not any(p.name in ("vocab.json", "vocab.txt") for p in written):
            print(f"note: the {meta['tokenizer']['type']!r} tokenizer has no Hugging Face counterpart; the folder "
                  "holds the model only")
        return 0
    return _export_onnx(args, model)


def _require_onnx() -> None:
    """Before any model is loaded: onnx and onnxruntime are there, or the command says how to get them."""
    import importlib.util
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"--format onnx needs {' and '.join(missing)}: pip install 'minitransformer[onnx]'")


def _export_onnx(args, model) -> int:
    import numpy as np  # host side only: the probe input

    from .. import backend
    from .onnx_graph import OPSET, gpt_to_onnx
    from .onnx_run import onnx_logits, onnx_session

    if args.quantize:
        from ..compress.quantize import quantize_model
        quantize_model(model, "int8")
    name = "model" + ("-int8" if args.quantize else "") + ("-kv" if args.kv_cache else "") + ".onnx"
    out = Path(args.out) if args.out else _run_dir(args.checkpoint) / name
    model.eval()
    proto = gpt_to_onnx(model, kv_cache=args.kv_cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    probe = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, min(8, model.config.block_size)))
    with model.no_grad():
        ours, _ = model.forward(backend.to_device(probe, model.device))
    diff = float(np.abs(onnx_logits(onnx_session(out), probe) - backend.to_numpy(ours)).max())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, opset {OPSET}, {len(proto.graph.node)} nodes); "
          f"onnxruntime vs minitransformer on a probe input: max |logit difference| {diff:.2e}")
    return 0
