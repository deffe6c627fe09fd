r"""GPT-2 as Hugging Face stores it, and the same network as minitransformer's GPT.

The two are the same computation with different names. Hugging Face's GPT-2 keeps OpenAI's
``Conv1D`` layers, which compute $y = x W + b$ with $W$ of shape (in, out): minitransformer's
`Linear` layout, so no weight is transposed. The fused attention projection ``c_attn`` (C, 3C)
holds the query, key and value columns side by side, each C wide and split into H heads of D
columns, exactly what `MultiHeadAttention.qkv` reshapes as (B,T,3,H,D): it is copied whole. The
output head is tied to the token embedding in both (``lm_head.weight`` is ``wte.weight``), the
activation is the tanh approximation of GELU (``"gelu_new"``) and the LayerNorm epsilon is
``layer_norm_epsilon``.

A PyTorch ``nn.Linear`` (BERT's layers) stores (out, in) instead and is transposed, and BERT's
separate query/key/value matrices are joined into one (C, 3C): that mapping is ``hf_bert.py``.
"""
from __future__ import annotations

import numpy as np  # I/O at the edge: the folder's tensors are host arrays

# Hugging Face GPT-2 activation names -> GPTConfig.activation ("gelu_fast" is the same polynomial
# written as x * 0.7978845608 * (1 + 0.044715 x^2))
ACTIVATIONS_IN = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "gelu": "gelu", "relu": "relu"}
ACTIVATIONS_OUT = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
# buffers some GPT-2 files carry that are not weights: the causal mask and its fill value
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")
PREFIX = "transformer."          # GPT2LMHeadModel's prefix; OpenAI's own files have none

# --8<-- [start:gpt2_names]
BLOCK_NAMES = [                  # (minitransformer, Hugging Face GPT-2), inside block i / h.i
    ("ln1.weight", "ln_1.weight"), ("ln1.bias", "ln_1.bias"),
    ("attn.qkv.weight", "attn.c_attn.weight"), ("attn.qkv.bias", "attn.c_attn.bias"),
    ("attn.proj.weight", "attn.c_proj.weight"), ("attn.proj.bias", "attn.c_proj.bias"),
    ("ln2.weight", "ln_2.weight"), ("ln2.bias", "ln_2.bias"),
    ("ffn.fc1.weight", "mlp.c_fc.weight"), ("ffn.fc1.bias", "mlp.c_fc.bias"),
    ("ffn.fc2.weight", "mlp.c_proj.weight"), ("ffn.fc2.bias", "mlp.c_proj.bias"),
]


def gpt2_names(n_layer: int) -> list[tuple[str, str]]:
    """(our name, GPT-2's name without the "transformer." prefix) of every tensor, in model order."""
    names = [("wte.weight", "wte.weight"), ("wpe.weight", "wpe.weight")]
    for i in range(n_layer):
        names += [(f"blocks.{i}.{ours}", f"h.{i}.{theirs}") for ours, theirs in BLOCK_NAMES]
    return names + [("ln_f.weight", "ln_f.weight"), ("ln_f.bias", "ln_f.bias")]
# --8<-- [end:gpt2_names]


def gpt_config_from_gpt2(hf: dict) -> dict:
    """The GPTConfig fields of a GPT-2 config.json; settings this GPT cannot reproduce are refused."""
    refused = {"add_cross_attention": False, "scale_attn_by_inverse_layer_idx": False, "scale_attn_weights": True,
               "tie_word_embeddings": True}
    for key, supported in refused.items():
        if hf.get(key, supported) != supported:
            raise ValueError(f"GPT-2 config: {key}={hf[key]!r} is not supported (minitransformer's GPT "
                             f"needs {key}={supported!r})")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in hf]
    if missing:
        raise ValueError(f"GPT-2 config: missing {missing}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS_IN:
        raise ValueError(f"GPT-2 config: activation_function={act!r} is not supported; "
                         f"expected one of {sorted(ACTIVATIONS_IN)}")
    return {"vocab_size": hf["vocab_size"], "block_size": hf["n_positions"], "n_layer": hf["n_layer"],
            "n_head": hf["n_head"], "d_model": hf["n_embd"], "d_ff": hf.get("n_inner"),
            "activation": ACTIVATIONS_IN[act], "norm_eps": float(hf.get("layer_norm_epsilon", 1e-5)),
            "norm": "pre", "positional": "learned", "bias": True, "dropout": 0.0}


# --8<-- [start:gpt_state_from_gpt2]
def gpt_state_from_gpt2(tensors: dict, n_layer: int) -> dict:
    """Our state dict from GPT-2's tensors: renamed, cast to float32, nothing transposed. Every
    tensor must be used: an unknown name, a missing one or an untied head is an error."""
    theirs = {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in tensors.items()}
    head = theirs.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in theirs and not np.array_equal(head, theirs["wte.weight"]):
        raise ValueError("GPT-2 weights: lm_head.weight differs from wte.weight (an untied head); "
                         "minitransformer's GPT ties its output head to the token embedding")
    names = gpt2_names(n_layer)
    missing = [t for _, t in names if t not in theirs]
    if missing:
        raise ValueError(f"GPT-2 weights: {len(missing)} tensor(s) missing, e.g. {missing[:4]} "
                         f"(for n_layer={n_layer})")
    known = {t for _, t in names}
    unknown = sorted(k for k in theirs if k not in known and not k.endswith(MASK_BUFFERS))
    if unknown:
        raise ValueError(f"GPT-2 weights: unexpected tensor(s) {unknown[:4]} (is this a GPT-2 folder "
                         f"with n_layer={n_layer}?)")
    return {ours: np.asarray(theirs[t], dtype=np.float32) for ours, t in names}
# --8<-- [end:gpt_state_from_gpt2]


def gpt2_config_from_gpt(cfg, bos_eos_id: int | None = None) -> dict:
    """A GPT-2 config.json for a GPTConfig that GPT-2 can express (else ValueError naming the field)."""
    required = {"norm": "pre", "positional": "learned", "bias": True, "attention": "dense", "low_rank": None}
    for key, value in required.items():
        if getattr(cfg, key) != value:
            raise ValueError(f"a GPT with {key}={getattr(cfg, key)!r} has no GPT-2 equivalent "
                             f"(GPT-2 has {key}={value!r})")
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size,
              "n_positions": cfg.block_size, "n_embd": cfg.d_model, "n_layer": cfg.n_layer,
              "n_head": cfg.n_head, "n_inner": cfg.d_ff, "activation_function": ACTIVATIONS_OUT[cfg.activation],
              "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": True, "scale_attn_weights": True,
              "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": 0.0}
    if bos_eos_id is not None:
        config.update(bos_token_id=bos_eos_id, eos_token_id=bos_eos_id)
    return config


def gpt2_state_from_gpt(state: dict, n_layer: int) -> dict:
    """GPT-2's tensors (GPT2LMHeadModel's names) from our state dict; the tied head is not stored."""
    return {PREFIX + theirs: np.ascontiguousarray(state[ours], dtype=np.float32)
            for ours, theirs in gpt2_names(n_layer)}
