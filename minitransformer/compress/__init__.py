"""Factorization and compression: low-rank layers and SVD, accounting, quantization, pruning,
distillation and LoRA, plus the `minitransformer compress` command (cli.py).

One concept per file:

* ``lowrank``     LowRankLinear (y = (xA)B + b), replace_linears, factorize_model
* ``svd``         truncated SVD with Eckart–Young errors; rank by k, energy or parameter budget
* ``accounting``  parameters, FLOPs per token and bytes per layer; the break-even rank
* ``quantize``    int8 per-channel weights, integer matmul, dynamic activations, float16
* ``prune``       magnitude pruning (layer/global), PruningMask, cubic schedule, head pruning
* ``distill``     distillation loss with hand-written backward; training a student
* ``lora``        LoRALinear, apply_lora, merge/unmerge
* ``finetune``    a short training loop with hooks (masks) for compressed models
* ``io``          saving and loading compressed checkpoints
"""
from .lowrank import LowRankLinear, factorize_model, from_linear, replace_linears
from .lora import LoRALinear, apply_lora, merge_lora, unmerge_lora
from .quantize import QuantizedLinear, quantize_model
from .prune import PruningMask, cubic_sparsity, head_importance, head_mask, prune_model
from .svd import svd_compress

__all__ = ["LowRankLinear", "factorize_model", "from_linear", "replace_linears", "LoRALinear", "apply_lora", "merge_lora",
           "unmerge_lora", "QuantizedLinear", "quantize_model", "PruningMask", "cubic_sparsity",
           "head_importance", "head_mask", "prune_model", "svd_compress"]
