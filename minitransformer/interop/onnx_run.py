"""Running an exported GPT with onnxruntime: logits, and greedy decoding token by token.

Without a KV cache in the graph, each decoding step runs the whole context again (cropped to the
last ``block_size`` tokens, as ``generate(..., use_cache=False)`` does). With one
(``gpt_to_onnx(model, kv_cache=True)``), the prompt runs once and then one token per step, the
cache being refilled from the last half window when the context is full, as ``generate`` does with
its own cache. Either way ``greedy_generate`` returns the tokens that
``minitransformer.generate.generate(model, idx, n, greedy=True, use_cache=...)`` returns.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np  # I/O at the edge: onnxruntime takes and gives host arrays


def onnx_session(model_or_path, threads: int | None = None, int8_activations: bool = False):
    """An onnxruntime InferenceSession (CPU) of a ModelProto, its bytes, or a .onnx file.

    onnxruntime fuses each DequantizeLinear -> MatMul pair of an int8 export into one MatMulNBits
    kernel. Its "accuracy level" says how that kernel computes: level 1 in float32 on the
    dequantised weights (what our int8 model computes), level 4 (onnxruntime's default) with the
    activations quantized to int8 on the fly too, faster and less exact. int8_activations picks 4.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running ONNX models needs onnxruntime: pip install 'minitransformer[onnx]'") from None
    options = ort.SessionOptions()
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "4" if int8_activations else "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model_or_path
    if hasattr(model_or_path, "SerializeToString"):
        source = model_or_path.SerializeToString()
    elif isinstance(model_or_path, Path):
        source = str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def empty_cache(session, batch: int) -> dict:
    """Zero-length past keys and values (B, H, 0, D) for every cache input of the graph (none: {})."""
    return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32)
            for i in session.get_inputs() if i.name.startswith("past_")}


def onnx_logits(session, input_ids) -> np.ndarray:
    """logits (B, T, V) float32 of int token ids (B, T), from the start (an empty cache if the
    graph has one)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"onnx_logits: expected integer token ids of shape (B, T), got {ids.dtype} {ids.shape}")
    return session.run(["logits"], {"input_ids": ids.astype(np.int64), **empty_cache(session, ids.shape[0])})[0]


# --8<-- [start:onnx_greedy]
def greedy_generate(session, input_ids, max_new_tokens: int, block_size: int) -> np.ndarray:
    """Extend (B, T) ids by max_new_tokens argmax tokens, with the graph's KV cache if it has one."""
    out = np.asarray(input_ids, dtype=np.int64)
    pasts = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
    if not pasts:
        for _ in range(max_new_tokens):
            logits = onnx_logits(session, out[:, -block_size:])               # (B, T', V)
            next_id = logits[:, -1, :].argmax(axis=-1)                         # (B,)
            out = np.concatenate([out, next_id[:, None]], axis=1)              # (B, T+1)
        return out
    cache, step_input = empty_cache(session, out.shape[0]), out[:, -block_size:]
    for _ in range(max_new_tokens):
        if cache[pasts[0]].shape[2] + step_input.shape[1] > block_size:
            cache, step_input = empty_cache(session, out.shape[0]), out[:, -(block_size // 2):]   # refill
        logits, *presents = session.run(None, {"input_ids": step_input, **cache})
        cache = dict(zip(pasts, presents))                                      # present_* -> the next past_*
        next_id = logits[:, -1, :].argmax(axis=-1)                             # (B,)
        out = np.concatenate([out, next_id[:, None]], axis=1)                  # (B, T+1)
        step_input = out[:, -1:]
    return out
# --8<-- [end:onnx_greedy]
