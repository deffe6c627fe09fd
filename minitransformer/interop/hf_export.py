"""Export a minitransformer model as a local Hugging Face folder that transformers loads.

One exporter per model kind in ``EXPORTERS`` (``model, tokenizer -> (config.json dict, tensors)``):
the GPT becomes ``GPT2LMHeadModel``, BERT ``BertForPreTraining`` (``BertForMaskedLM`` without NSP). The tokenizer goes along when Hugging Face has its kind
(GPT-2's byte-level BPE: vocab.json + merges.txt; WordPiece: vocab.txt); a character-level vocabulary has no Hugging Face
counterpart, and the folder then holds the model only.
"""
from __future__ import annotations

from pathlib import Path

from ..attention.multi_head import MultiHeadAttention
from ..blocks import FeedForward
from ..compress.lora import LoRALinear
from ..data.bpe import GPT2BPETokenizer
from ..data.wordpiece import WordPieceTokenizer
from .hf_bert import hf_config_from_bert, hf_state_from_bert, write_bert_vocab
from ..nn.linear import Linear
from .hf_folder import write_hf_folder
from .hf_gpt2 import gpt2_config_from_gpt, gpt2_state_from_gpt


def export_gpt(model, tokenizer) -> tuple[dict, dict]:
    eot = tokenizer.stoi.get("<|endoftext|>") if isinstance(tokenizer, GPT2BPETokenizer) else None
    config = gpt2_config_from_gpt(model.config, eot)
    return config, gpt2_state_from_gpt(model.state_dict(), model.config.n_layer)


def export_bert(model, tokenizer) -> tuple[dict, dict]:
    return hf_config_from_bert(model.config), hf_state_from_bert(model.state_dict(), model.config)


EXPORTERS = {"gpt": export_gpt, "bert": export_bert}   # model kind -> exporter


def check_plain(model) -> None:
    """Only the plain layers a Hugging Face model has: compressed layers are refused."""
    for name, module in model.named_modules():
        if isinstance(module, (MultiHeadAttention, FeedForward)):
            for attr in ("qkv", "proj", "fc1", "fc2"):
                layer = getattr(module, attr, None)
                if isinstance(layer, LoRALinear) and layer.merged:
                    continue                       # its weight is W0 + s A B, a plain matrix
                if layer is not None and not isinstance(layer, Linear):
                    raise ValueError(f"export to Hugging Face: layer {name}.{attr} is a {type(layer).__name__}; "
                                     "only plain Linear layers have a Hugging Face layout (export the model "
                                     "before compressing it, or merge LoRA adapters: compress --method lora --merge)")


def export_hf(model, tokenizer, out) -> list[Path]:
    """Write the model (and its tokenizer when Hugging Face has one like it) into folder `out`."""
    kind = getattr(model, "kind", type(model).__name__)
    if kind not in EXPORTERS:
        raise ValueError(f"a {kind!r} model cannot be exported to Hugging Face; supported kinds: {sorted(EXPORTERS)}")
    check_plain(model)
    config, tensors = EXPORTERS[kind](model, tokenizer)
    written = write_hf_folder(out, config, tensors)
    if isinstance(tokenizer, GPT2BPETokenizer):
        written += tokenizer.save_files(out)
    elif isinstance(tokenizer, WordPieceTokenizer):
        written += write_bert_vocab(tokenizer, out)
    return written
