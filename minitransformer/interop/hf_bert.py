r"""BERT as Hugging Face stores it, and the same network as minitransformer's `BertModel`.

Three differences of layout, none of computation:

* PyTorch's ``nn.Linear`` stores $W$ as (out, in) and computes $y = x W^\top + b$; our `Linear`
  stores (in, out) and computes $y = x W + b$. Every dense matrix is transposed.
* BERT keeps three (C, C) projections ``query``, ``key``, ``value``. Our `MultiHeadAttention`
  has one fused ``qkv`` of shape (C, 3C) whose columns it reshapes as (3, H, D): the query columns,
  then the key's, then the value's, each split into H heads of D = C/H. So
  $W_{qkv} = [\,W_q^\top \mid W_k^\top \mid W_v^\top\,]$ and $b_{qkv} = [b_q, b_k, b_v]$; BERT's
  heads are the same consecutive D-wide slices of each projection.
* Our WordPiece ids 0..4 are [PAD] [UNK] [CLS] [SEP] [MASK]; BERT's vocab.txt has them wherever
  it put them (bert-base: 0, 100, 101, 102, 103). The word-table rows and the decoder bias are
  moved by one permutation `order` (``special_first_order``), so our token i is BERT's token
  ``order[i]`` and our logits are BERT's ``logits[..., order]``.

The MLM decoder is tied to the word embeddings in both (``cls.predictions.decoder.weight`` is
``bert.embeddings.word_embeddings.weight``) and has its own bias (``cls.predictions.bias``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np  # I/O at the edge: the folder's tensors are host arrays

from ..data.wordpiece import WordPieceTokenizer, read_vocab_file, special_first_order

PREFIX = "bert."                 # BertForPreTraining / BertForMaskedLM; a bare BertModel has none
VOCAB_TXT = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
DECODER = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")   # tied copies, if stored
BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")             # index buffers, not weights

# --8<-- [start:bert_names]
# (minitransformer name, Hugging Face name, how): "copy", "T" (transpose an (out, in) matrix),
# "rows" (move the vocabulary rows by `order`). The q/k/v join is in `block_state`.
EMBEDDING_NAMES = [
    ("encoder.embeddings.word.weight", "bert.embeddings.word_embeddings.weight", "rows"),
    ("encoder.embeddings.segment.weight", "bert.embeddings.token_type_embeddings.weight", "copy"),
    ("encoder.embeddings.position.weight", "bert.embeddings.position_embeddings.weight", "copy"),
    ("encoder.embeddings.ln.weight", "bert.embeddings.LayerNorm.weight", "copy"),
    ("encoder.embeddings.ln.bias", "bert.embeddings.LayerNorm.bias", "copy"),
]
BLOCK_NAMES = [                  # inside encoder.blocks.i / bert.encoder.layer.i
    ("attn.proj.weight", "attention.output.dense.weight", "T"),
    ("attn.proj.bias", "attention.output.dense.bias", "copy"),
    ("ln1.weight", "attention.output.LayerNorm.weight", "copy"),   # post-LN: after attention
    ("ln1.bias", "attention.output.LayerNorm.bias", "copy"),
    ("ffn.fc1.weight", "intermediate.dense.weight", "T"),
    ("ffn.fc1.bias", "intermediate.dense.bias", "copy"),
    ("ffn.fc2.weight", "output.dense.weight", "T"),
    ("ffn.fc2.bias", "output.dense.bias", "copy"),
    ("ln2.weight", "output.LayerNorm.weight", "copy"),             # post-LN: after the feed-forward
    ("ln2.bias", "output.LayerNorm.bias", "copy"),
]
QKV = ("query", "key", "value")  # attention.self.{query,key,value}.{weight,bias} -> attn.qkv
POOLER_NAMES = [
    ("encoder.pooler.dense.weight", "bert.pooler.dense.weight", "T"),
    ("encoder.pooler.dense.bias", "bert.pooler.dense.bias", "copy"),
]
MLM_NAMES = [
    ("mlm.transform.weight", "cls.predictions.transform.dense.weight", "T"),
    ("mlm.transform.bias", "cls.predictions.transform.dense.bias", "copy"),
    ("mlm.ln.weight", "cls.predictions.transform.LayerNorm.weight", "copy"),
    ("mlm.ln.bias", "cls.predictions.transform.LayerNorm.bias", "copy"),
    ("mlm.bias", "cls.predictions.bias", "rows"),
]
NSP_NAMES = [
    ("nsp.dense.weight", "cls.seq_relationship.weight", "T"),
    ("nsp.dense.bias", "cls.seq_relationship.bias", "copy"),
]
# --8<-- [end:bert_names]

ARCHITECTURES = {"BertForPreTraining": True, "BertForMaskedLM": False}   # -> has the NSP head
# settings our BERT cannot reproduce: key -> the one value it supports
REQUIRED = {"hidden_act": "gelu", "position_embedding_type": "absolute", "is_decoder": False,
            "add_cross_attention": False, "tie_word_embeddings": True}


def bert_names(n_layer: int, nsp: bool, pooler: bool = True) -> list[tuple[str, str, str]]:
    """(our name, Hugging Face name, how) of every tensor but the joined q/k/v, in model order."""
    names = list(EMBEDDING_NAMES)
    for i in range(n_layer):
        names += [(f"encoder.blocks.{i}.{ours}", f"bert.encoder.layer.{i}.{theirs}", how)
                  for ours, theirs, how in BLOCK_NAMES]
    return names + (POOLER_NAMES if pooler else []) + MLM_NAMES + (NSP_NAMES if nsp else [])


def qkv_names(i: int) -> list[str]:
    """Hugging Face's six q/k/v tensors of layer i, weights then biases."""
    base = f"bert.encoder.layer.{i}.attention.self"
    return [f"{base}.{p}.{kind}" for kind in ("weight", "bias") for p in QKV]


def architecture(hf: dict) -> str:
    arch = (hf.get("architectures") or ["BertForPreTraining"])[0]
    if arch not in ARCHITECTURES:
        raise ValueError(f"BERT config: architectures={hf.get('architectures')!r} cannot be imported; "
                         f"expected one of {sorted(ARCHITECTURES)} (a model with the masked-LM head)")
    return arch


# --8<-- [start:bert_config]
def bert_config_from_hf(hf: dict, vocab_size: int | None = None) -> dict:
    """The BertConfig fields of a BERT config.json; settings our BERT cannot reproduce are refused."""
    for key, supported in REQUIRED.items():
        if hf.get(key, supported) != supported:
            raise ValueError(f"BERT config: {key}={hf[key]!r} is not supported (minitransformer's BERT "
                             f"needs {key}={supported!r})")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings") if k not in hf]
    if missing:
        raise ValueError(f"BERT config: missing {missing}")
    return {"vocab_size": hf["vocab_size"], "max_len": hf["max_position_embeddings"],
            "n_layer": hf["num_hidden_layers"], "n_head": hf["num_attention_heads"], "d_model": hf["hidden_size"],
            "d_ff": hf["intermediate_size"], "n_segments": hf.get("type_vocab_size", 2),
            "nsp": ARCHITECTURES[architecture(hf)], "dropout": float(hf.get("hidden_dropout_prob", 0.1)),
            "activation": "gelu", "norm_eps": float(hf.get("layer_norm_eps", 1e-12))}
# --8<-- [end:bert_config]


def _normalise_names(tensors: dict) -> dict:
    """Hugging Face's names with the "bert." prefix (a bare BertModel file has none) and the
    gamma/beta LayerNorm names of old TensorFlow conversions read as weight/bias."""
    out = {}
    for k, v in tensors.items():
        if not (k.startswith(PREFIX) or k.startswith("cls.")):
            k = PREFIX + k
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[k] = v
    return out


def _take(value, how: str, order):
    value = np.asarray(value, dtype=np.float32)
    if how == "T":
        return np.ascontiguousarray(value.T)               # (out, in) -> (in, out)
    if how == "rows":
        return value[order]                                # BERT's vocabulary order -> ours
    return value


# --8<-- [start:bert_state_from_hf]
def bert_state_from_hf(tensors: dict, config: dict, order: list[int], fresh_pooler: dict | None = None) -> dict:
    """Our state dict from BERT's tensors: renamed, transposed, q/k/v joined, vocabulary rows moved
    by `order`. Every tensor must be used: an unknown name, a missing one or an untied decoder is an
    error. A BertForMaskedLM file has no pooler: `fresh_pooler` (a new model's) fills it in."""
    theirs = _normalise_names(tensors)
    word = theirs.get(EMBEDDING_NAMES[0][1])
    decoder_w, decoder_b = (theirs.pop(name, None) for name in DECODER)
    if decoder_w is not None and word is not None and not np.array_equal(decoder_w, word):
        raise ValueError("BERT weights: cls.predictions.decoder.weight differs from the word embeddings (an "
                         "untied decoder); minitransformer's BERT ties its decoder to the word table")
    if decoder_b is not None and "cls.predictions.bias" in theirs and not np.array_equal(
            decoder_b, theirs["cls.predictions.bias"]):
        raise ValueError("BERT weights: cls.predictions.decoder.bias differs from cls.predictions.bias")
    has_pooler = "bert.pooler.dense.weight" in theirs
    names = bert_names(config["n_layer"], config["nsp"], pooler=has_pooler)
    qkv = [n for i in range(config["n_layer"]) for n in qkv_names(i)]
    missing = [t for _, t, _ in names if t not in theirs] + [t for t in qkv if t not in theirs]
    if missing:
        raise ValueError(f"BERT weights: {len(missing)} tensor(s) missing, e.g. {missing[:4]} "
                         f"(for num_hidden_layers={config['n_layer']}, nsp head {config['nsp']})")
    known = {t for _, t, _ in names} | set(qkv)
    unknown = sorted(k for k in theirs if k not in known and not k.endswith(BUFFERS))
    if unknown:
        raise ValueError(f"BERT weights: unexpected tensor(s) {unknown[:4]} (is this a {sorted(ARCHITECTURES)} "
                         f"folder with num_hidden_layers={config['n_layer']}?)")
    state = {ours: _take(theirs[t], how, order) for ours, t, how in names}
    for i in range(config["n_layer"]):
        wq, wk, wv, bq, bk, bv = (np.asarray(theirs[n], np.float32) for n in qkv_names(i))
        state[f"encoder.blocks.{i}.attn.qkv.weight"] = np.concatenate([wq.T, wk.T, wv.T], axis=1)   # (C, 3C)
        state[f"encoder.blocks.{i}.attn.qkv.bias"] = np.concatenate([bq, bk, bv])                   # (3C,)
    if not has_pooler:
        state.update(fresh_pooler or {})
    return state
# --8<-- [end:bert_state_from_hf]


def vocab_order(tokens: list[str], vocab_size: int, where: str) -> list[int]:
    """`special_first_order` of vocab.txt, extended by the rows of a padded table (a model
    vocab_size above the file's length keeps its extra rows last, in order)."""
    if len(tokens) > vocab_size:
        raise ValueError(f"{where}: {VOCAB_TXT} has {len(tokens)} tokens but vocab_size is only {vocab_size}")
    return special_first_order(tokens) + list(range(len(tokens), vocab_size))


def read_bert_tokenizer(path: Path, hf_config: dict) -> tuple[WordPieceTokenizer, list[int]]:
    """(tokenizer, order) from the folder's vocab.txt and tokenizer_config.json (do_lower_case,
    strip_accents; BertTokenizer's defaults True and None when absent)."""
    import json

    if not (path / VOCAB_TXT).is_file():
        raise ValueError(f"{str(path)!r} has no {VOCAB_TXT}: a BERT folder needs its WordPiece vocabulary "
                         "(the word table's rows are put in the tokenizer's order)")
    options = {}
    if (path / TOKENIZER_CONFIG).is_file():
        options = json.loads((path / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    lowercase = bool(options.get("do_lower_case", True))
    accents = options.get("strip_accents")
    accents = None if accents is None else not accents
    tokens = read_vocab_file(path / VOCAB_TXT)
    order = vocab_order(tokens, hf_config["vocab_size"], str(path))
    return WordPieceTokenizer.from_vocab_file(path / VOCAB_TXT, lowercase, accents), order


# -- export: our BERT as BertForPreTraining / BertForMaskedLM --------------------------------------
def hf_config_from_bert(cfg) -> dict:
    """A BERT config.json for a BertConfig that BERT can express (else ValueError naming the field)."""
    required = {"d_embed": None, "share_layers": False, "activation": "gelu"}
    for key, value in required.items():
        if getattr(cfg, key) != value:
            raise ValueError(f"a BERT with {key}={getattr(cfg, key)!r} has no Hugging Face BertModel "
                             f"equivalent (it has {key}={value!r})")
    arch = "BertForPreTraining" if cfg.nsp else "BertForMaskedLM"
    return {"model_type": "bert", "architectures": [arch], "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "intermediate_size": cfg.d_ff or 4 * cfg.d_model, "hidden_act": "gelu",
            "max_position_embeddings": cfg.max_len, "type_vocab_size": cfg.n_segments,
            "layer_norm_eps": cfg.norm_eps, "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": 0.0,
            "position_embedding_type": "absolute", "pad_token_id": 0, "tie_word_embeddings": True}


def hf_state_from_bert(state: dict, cfg) -> dict:
    """BERT's tensors from our state dict, in our vocabulary order (the vocab.txt written beside
    them is ours too); the tied decoder weight is not stored."""
    out = {}
    for ours, theirs, how in bert_names(cfg.n_layer, cfg.nsp):
        value = np.asarray(state[ours], np.float32)
        out[theirs] = np.ascontiguousarray(value.T if how == "T" else value)
    C = cfg.d_model
    for i in range(cfg.n_layer):
        w = np.asarray(state[f"encoder.blocks.{i}.attn.qkv.weight"], np.float32)   # (C, 3C)
        b = np.asarray(state[f"encoder.blocks.{i}.attn.qkv.bias"], np.float32)     # (3C,)
        names = qkv_names(i)
        for j in range(3):
            out[names[j]] = np.ascontiguousarray(w[:, j * C:(j + 1) * C].T)       # (C, C) as (out, in)
            out[names[3 + j]] = np.ascontiguousarray(b[j * C:(j + 1) * C])
    return out


def write_bert_vocab(tokenizer: WordPieceTokenizer, out) -> list[Path]:
    """vocab.txt (our id order) and tokenizer_config.json for transformers' BertTokenizer."""
    import json

    out = Path(out)
    (out / VOCAB_TXT).write_text("".join(t + "\n" for t in tokenizer.itos), encoding="utf-8")
    options = {"tokenizer_class": "BertTokenizer", "do_lower_case": tokenizer.lowercase,
               "strip_accents": not tokenizer.accents if tokenizer.accents == tokenizer.lowercase else None,
               "tokenize_chinese_chars": True}
    (out / TOKENIZER_CONFIG).write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
    return [out / VOCAB_TXT, out / TOKENIZER_CONFIG]
