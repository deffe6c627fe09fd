"""Running an exported GPT with onnxruntime: logits, and greedy decoding token by token.

The graph has no KV cache, so each decoding step runs the whole context again (cropped to the
last ``block_size`` tokens, as ``generate(..., use_cache=False)`` does); ``greedy_generate``
returns what ``minitransformer.generate.generate(model, idx, n, greedy=True)`` returns.
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


def onnx_logits(session, input_ids) -> np.ndarray:
    """logits (B, T, V) float32 of int token ids (B, T)."""
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"onnx_logits: expected integer token ids of shape (B, T), got {ids.dtype} {ids.shape}")
    return session.run(["logits"], {"input_ids": ids.astype(np.int64)})[0]


# --8<-- [start:onnx_greedy]
def greedy_generate(session, input_ids, max_new_tokens: int, block_size: int) -> np.ndarray:
    """Extend (B, T) ids by max_new_tokens argmax tokens, recomputing the last block_size each step."""
    out = np.asarray(input_ids, dtype=np.int64)
    for _ in range(max_new_tokens):
        logits = onnx_logits(session, out[:, -block_size:])                   # (B, T', V)
        next_id = logits[:, -1, :].argmax(axis=-1)                             # (B,)
        out = np.concatenate([out, next_id[:, None]], axis=1)                  # (B, T+1)
    return out
# --8<-- [end:onnx_greedy]
