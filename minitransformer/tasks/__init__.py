"""Tasks: batches + loss + metrics, run by the one training loop (``train.fit``)."""
from .base import Task, to_device
from .causal_lm import CausalLMTask
from .distillation import DistillationTask
from .seq2seq import ReverseTask

__all__ = ["Task", "to_device", "CausalLMTask", "DistillationTask", "ReverseTask"]
