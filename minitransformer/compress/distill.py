r"""Knowledge distillation (Hinton et al., 2015): a student learns from a teacher's softened outputs.

The loss and its hand-written backward are a functional pair in ``nn/functional/distillation.py``;
the batches and the loss of a training step are a task (``tasks/distillation.py``); the steps are
run by the one training loop, ``train.fit``. This file puts the three together.
"""
from __future__ import annotations

from ..nn.functional.distillation import (DistillCache, check_distill_args, distillation_loss_backward,
                                          distillation_loss_forward)
from ..tasks import DistillationTask
from ..train import TrainConfig, fit

__all__ = ["DistillCache", "check_distill_args", "distillation_loss_forward", "distillation_loss_backward",
           "distill"]


# --8<-- [start:distill_train]
def distill(student, teacher, task, cfg: TrainConfig, temperature: float = 2.0, alpha: float = 0.5,
            hooks=(), out_dir=None, progress: bool = False, log=None) -> dict:
    """Train `student` on `teacher`'s soft targets over the batches of `task` (a causal-LM task,
    say), with the schedule, clipping and checkpoints of `cfg`. Each hook(model) runs after every
    optimizer step (a PruningMask, say). Returns `fit`'s summary (its "batch_losses" included)."""
    return fit(student, DistillationTask(task, teacher, temperature, alpha), cfg, out_dir,
               progress=progress, log=log or (lambda *a: None), hooks=hooks)
# --8<-- [end:distill_train]
