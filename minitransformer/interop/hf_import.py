"""Import a local Hugging Face folder as a minitransformer model and checkpoint.

One importer per Hugging Face ``model_type``, each a function ``folder -> (kind, config fields,
state dict, tokenizer or None)`` registered in ``IMPORTERS``: GPT-2 (renamed, nothing transposed)
and BERT (its separate q/k/v joined into one qkv, its (out, in) Linear weights transposed, its
vocabulary rows put in the WordPiece tokenizer's order). The checkpoint written is an ordinary one
(``checkpoint.save_checkpoint``), holding the tokenizer read from the folder, so
``minitransformer generate`` (GPT-2) or ``minitransformer fill-mask`` (BERT) uses it like any
trained run.
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import save_checkpoint
from ..models.registry import build_model
from .hf_bert import bert_config_from_hf, bert_state_from_hf, read_bert_tokenizer
from .hf_folder import HFFolder, read_hf_folder, read_hf_tokenizer
from .hf_gpt2 import gpt_config_from_gpt2, gpt_state_from_gpt2


# --8<-- [start:importers]
def import_gpt2(folder: HFFolder) -> tuple[str, dict, dict, object]:
    """GPT-2 (GPT2LMHeadModel or GPT2Model weights) -> the "gpt" family."""
    config = gpt_config_from_gpt2(folder.config)
    tokenizer = read_hf_tokenizer(folder.path)
    return "gpt", config, gpt_state_from_gpt2(folder.tensors, config["n_layer"]), tokenizer


def import_bert(folder: HFFolder) -> tuple[str, dict, dict, object]:
    """BERT (BertForPreTraining, or BertForMaskedLM without the NSP head) -> the "bert" family."""
    config = bert_config_from_hf(folder.config)
    tokenizer, order = read_bert_tokenizer(folder.path, folder.config)
    fresh = build_model("bert", config).state_dict()     # only for a file without a pooler
    pooler = {k: v for k, v in fresh.items() if k.startswith("encoder.pooler.")}
    return "bert", config, bert_state_from_hf(folder.tensors, config, order, pooler), tokenizer


IMPORTERS = {"gpt2": import_gpt2, "bert": import_bert}   # Hugging Face model_type -> importer


def import_hf(path, device: str = "cpu"):
    """(model, tokenizer or None) from a local Hugging Face folder; no network."""
    return _import(read_hf_folder(path), device)


def _import(folder: HFFolder, device: str = "cpu"):
    model_type = folder.config.get("model_type")
    if model_type not in IMPORTERS:
        raise ValueError(f"{str(folder.path)!r}: model_type {model_type!r} cannot be imported; "
                         f"supported: {sorted(IMPORTERS)}")
    kind, config, state, tokenizer = IMPORTERS[model_type](folder)
    model = build_model(kind, config)
    model.load_state_dict(state)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:   # a padded table is fine
        raise ValueError(f"{str(folder.path)!r}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                         f"vocab_size is only {model.config.vocab_size}")
    return model.to(device), tokenizer
# --8<-- [end:importers]


def import_hf_checkpoint(path, out) -> Path:
    """Import the folder at `path` and write it as a checkpoint in the run directory `out`
    (its ``checkpoint.safetensors``); returns the file written."""
    folder = read_hf_folder(path)
    model, tokenizer = _import(folder)
    meta = {"model": model.describe(), "tokenizer": tokenizer.to_dict() if tokenizer else None,
            "source": {"format": "huggingface", "model_type": folder.config["model_type"],
                       "folder": str(folder.path.resolve())}}
    return save_checkpoint(out, model.state_dict(), meta)
