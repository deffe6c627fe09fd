"""Saving and loading compressed checkpoints.

A compressed model is the model of its description (kind + config) after surgery (low-rank
factors, quantized layers, LoRA adapters). Its checkpoint is an ordinary minitransformer checkpoint
(safetensors, verified on load) whose metadata adds a ``compression`` entry: the method and, per
replaced layer, what it became (``{"kind": "lowrank", "rank": 8}``, ``{"kind": "quantized", "mode":
"int8", "bits": 8}``, ...). Loading rebuilds the model from its description, replays that surgery,
then loads the arrays (buffers included), so int8 weights stay int8 on disk and in memory.
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint, load_weights, model_of, save_checkpoint
from ..nn.module import Module
from .lora import LoRALinear
from ..nn.lowrank import LowRankLinear
from .surgery import slots
from .quantize import QuantizedLinear


def describe_layers(model: Module) -> dict:
    """{dotted name: description} of every compressed layer in the model."""
    out = {}
    for name, _, _, child in slots(model):
        if isinstance(child, LowRankLinear):
            out[name] = {"kind": "lowrank", "rank": child.rank}
        elif isinstance(child, QuantizedLinear):
            out[name] = {"kind": "quantized", "mode": child.mode, "bits": child.bits}
        elif isinstance(child, LoRALinear):
            out[name] = {"kind": "lora", "rank": child.rank, "alpha": child.alpha, "merged": child.merged}
    return out


def save_compressed(path, model: Module, meta: dict, method: str, extra: dict | None = None) -> Path:
    """Write the compressed model with `meta` (model_config, tokenizer, ...) plus the compression
    description; returns the path of the safetensors file."""
    meta = {k: v for k, v in meta.items() if k not in ("rng", "sha256", "format_version")}
    meta["compression"] = {"method": method, "layers": describe_layers(model), **(extra or {})}
    return save_checkpoint(path, model.state_dict(), meta)


def _replace_exact(model, layers: dict, make) -> None:
    """Replace exactly the Linears named in `layers` (full dotted names) by make(name, linear)."""
    from ..nn.linear import Linear
    found = {n: (owner, key, child) for n, owner, key, child in slots(model)}
    for name in layers:
        if name not in found or not isinstance(found[name][2], (Linear, LowRankLinear)):
            raise CheckpointError(f"compressed layer {name!r} does not exist as a Linear in this model")
        owner, key, child = found[name]
        if isinstance(child, LowRankLinear) and layers[name] == {"kind": "lowrank", "rank": child.rank}:
            continue                                   # built low-rank by the config already
        new = make(name, child)
        if isinstance(owner, list):
            owner[key] = new
        else:
            setattr(owner, key, new)


def load_compressed(path, device: str = "cpu", which: str = "best"):
    """(model, meta) from a checkpoint written by save_compressed, or a plain one of any family."""
    state, _, meta = load_checkpoint(path, which)
    # device and dtype first: Module.to would cast float16 weights of quantized layers
    model = model_of(meta, path, device)
    layers = meta.get("compression", {}).get("layers", {})
    _replace_exact(model, layers, _maker(layers))
    load_weights(model, state, path)
    return model, meta


def _maker(layers: dict):
    """make(name, linear) building the (empty) compressed layer that `layers[name]` describes."""
    def make(name, lin):
        d = layers[name]
        if d["kind"] == "lowrank":
            return LowRankLinear(lin.in_features, lin.out_features, d["rank"], bias=lin.bias is not None)
        if d["kind"] == "quantized":
            return QuantizedLinear(lin, d["mode"], 8 if d["mode"] == "fp16" else d["bits"])
        if d["kind"] == "lora":
            layer = LoRALinear(lin, d["rank"], d["alpha"])
            layer.merged = d["merged"]
            return layer
        raise CheckpointError(f"layer {name}: unknown compressed kind {d['kind']!r}")
    return make


def check_compressible(model, path) -> None:
    """`minitransformer compress` measures a causal language model on text: refuse other kinds."""
    if not getattr(model, "can_generate", False):
        raise CheckpointError(f"checkpoint {path} holds a {model.kind!r} model; `minitransformer compress` "
                              "works on causal language models trained on text (--model gpt), whose "
                              "validation loss and speed it reports")
