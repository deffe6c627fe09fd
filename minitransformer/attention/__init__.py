"""Attention: scaled dot-product, masks, multi-head attention and one file per efficient variant.

Every variant is an `AttentionKernel` registered by name (see `kernel.py`)."""
from .kernel import AttentionKernel, kernel_names, make_kernel, register_kernel
from .masks import attention_mask, causal_mask, mask_to_bias, padding_mask
from .scaled_dot_product import DenseAttention, attention_backward, attention_forward, attention_weights
from .kv_cache import KVCache
from .multi_head import MultiHeadAttention
