"""Attention: scaled dot-product, masks, multi-head attention and one file per efficient variant.

Every variant is an `AttentionKernel` registered by name (see `kernel.py`)."""
from .kernel import AttentionKernel, kernel_names, make_kernel, register_kernel
