"""Saving and loading compressed GPT checkpoints.

A compressed model is the GPT of its configuration after surgery (low-rank factors, quantized
layers, LoRA adapters). Its checkpoint is an ordinary minitransformer checkpoint (safetensors,
verified on load) whose metadata adds a ``compression`` entry: the method and, per replaced layer,
what it became (``{"kind": "lowrank", "rank": 8}``, ``{"kind": "quantized", "mode": "int8",
"bits": 8}``, ...). Loading rebuilds the GPT from its config, replays that surgery, then loads the
arrays, so int8 weights stay int8 on disk and in memory.
"""
from __future__ import annotations

from pathlib import Path

from .. import backend
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..nn.module import Module
from .lora import LoRALinear
from .lowrank import LowRankLinear, _slots
from .quantize import QuantizedLinear


def describe_layers(model: Module) -> dict:
    """{dotted name: description} of every compressed layer in the model."""
    out = {}
    for name, _, _, child in _slots(model):
        if isinstance(child, LowRankLinear):
            out[name] = {"kind": "lowrank", "rank": child.rank}
        elif isinstance(child, QuantizedLinear):
            out[name] = {"kind": "quantized", "mode": child.mode, "bits": child.bits}
        elif isinstance(child, LoRALinear):
            out[name] = {"kind": "lora", "rank": child.rank, "alpha": child.alpha, "merged": child.merged}
    return out


def compressed_state(model: Module) -> dict:
    """Host arrays of every parameter plus the buffers of quantized layers (int8 kept as int8)."""
    state = dict(model.state_dict())
    for name, _, _, child in _slots(model):
        if isinstance(child, QuantizedLinear):
            for buf in QuantizedLinear._buffers:
                value = getattr(child, buf)
                if value is not None:
                    state[f"{name}.{buf}"] = backend.to_numpy(value)
    return state


def save_compressed(path, model: Module, meta: dict, method: str, extra: dict | None = None) -> Path:
    """Write the compressed model with `meta` (model_config, tokenizer, ...) plus the compression
    description; returns the path of the safetensors file."""
    meta = {k: v for k, v in meta.items() if k not in ("rng", "sha256", "format_version")}
    meta["compression"] = {"method": method, "layers": describe_layers(model), **(extra or {})}
    return save_checkpoint(path, compressed_state(model), meta)


def _replace_exact(model, layers: dict, make) -> None:
    """Replace exactly the Linears named in `layers` (full dotted names) by make(name, linear)."""
    from ..nn.linear import Linear
    slots = {n: (owner, key, child) for n, owner, key, child in _slots(model)}
    for name in layers:
        if name not in slots or not isinstance(slots[name][2], (Linear, LowRankLinear)):
            raise CheckpointError(f"compressed layer {name!r} does not exist as a Linear in this model")
        owner, key, child = slots[name]
        if isinstance(child, LowRankLinear) and layers[name] == {"kind": "lowrank", "rank": child.rank}:
            continue                                   # built low-rank by the config already
        new = make(name, child)
        if isinstance(owner, list):
            owner[key] = new
        else:
            setattr(owner, key, new)


def load_compressed(path, device: str = "cpu"):
    """(model, tokenizer, meta) from a checkpoint written by save_compressed (or a plain GPT one)."""
    from ..config import from_dict
    from ..data.tokenizer import CharTokenizer
    from ..models.gpt import GPT, GPTConfig

    state, _, meta = load_checkpoint(path)
    check_gpt_meta(meta, path)
    config = from_dict(GPTConfig, meta["model_config"], f"checkpoint {path}")
    # device and dtype first: Module.to would cast float16 weights of quantized layers
    model = GPT(config).to(device, meta.get("train_config", {}).get("dtype", "float32"))
    layers = meta.get("compression", {}).get("layers", {})
    _replace_exact(model, layers, _maker(layers))
    buffers = []
    for name, _, _, child in _slots(model):
        if isinstance(child, QuantizedLinear):
            for buf in QuantizedLinear._buffers:
                if f"{name}.{buf}" in state:
                    buffers.append((child, buf, state.pop(f"{name}.{buf}")))
    model.load_state_dict(state)
    for child, buf, value in buffers:
        setattr(child, buf, backend.to_device(value, device))
    return model, CharTokenizer.from_dict(meta["tokenizer"]), meta


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


def check_gpt_meta(meta: dict, path) -> None:
    """Refuse checkpoints that are not of a GPT (another model, or no configuration)."""
    kind = meta.get("model_type", meta.get("model", "gpt"))
    if not isinstance(kind, str) or kind.lower() != "gpt":
        raise CheckpointError(f"checkpoint {path} holds a {kind!r} model; `minitransformer compress` "
                              "works on GPT checkpoints (written by `minitransformer train`)")
    if "model_config" not in meta or "tokenizer" not in meta:
        raise CheckpointError(f"checkpoint {path} has no GPT model configuration or tokenizer; "
                              "is it a checkpoint of another model?")
    from dataclasses import fields

    from ..models.gpt import GPTConfig
    known = {f.name for f in fields(GPTConfig)}
    unknown = sorted(set(meta["model_config"]) - known)
    if unknown:
        raise CheckpointError(f"checkpoint {path} was written for another model: its configuration has "
                              f"fields {unknown[:6]} that a GPTConfig does not have")
