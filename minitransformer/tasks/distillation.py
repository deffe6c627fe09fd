r"""Distillation as a task: the student learns from a fixed teacher's softened outputs.

Batches come from another task (language modelling, say); the loss is
$\alpha T^2 \mathrm{KL}(p^t_T \,\|\, p^s_T) + (1 - \alpha)\,\mathrm{CE}(z^s, y)$
(``nn/functional/distillation.py``, where its backward is derived). The teacher runs without
keeping activations; only the student is trained.
"""
from __future__ import annotations

from ..nn.functional.distillation import (check_distill_args, distillation_loss_backward,
                                          distillation_loss_forward)
from .base import Task, to_device


# --8<-- [start:distillation_task]
class DistillationTask(Task):
    """Wraps `task`: the same batches, the distillation loss of the student against `teacher`."""

    name = "distillation"

    def __init__(self, task: Task, teacher, temperature: float = 2.0, alpha: float = 0.5):
        check_distill_args(temperature, alpha)
        self.task, self.teacher, self.temperature, self.alpha = task, teacher.eval(), temperature, alpha
        self.splits = task.splits

    def batch(self, split: str, batch_size: int, rng):
        return self.task.batch(split, batch_size, rng)

    def _loss(self, student, batch):
        *inputs, targets = to_device(batch, student.device)
        with self.teacher.no_grad():
            teacher_logits, _ = self.teacher.forward(*inputs)                # (B, T, V), fixed
        student_logits, _ = student.forward(*inputs)                          # (B, T, V)
        return distillation_loss_forward(student_logits, teacher_logits, targets, self.temperature,
                                         self.alpha)

    def forward_backward(self, student, batch, dloss: float = 1.0) -> float:
        loss, cache = self._loss(student, batch)
        dlogits, _, _ = distillation_loss_backward(dloss, cache)
        student.backward(dlogits)
        return float(loss)

    def loss(self, student, batch) -> float:
        return float(self._loss(student, batch)[0])
# --8<-- [end:distillation_task]

    def counted(self, batch) -> int:
        return self.task.counted(batch)

    def baseline(self):
        return self.task.baseline()

    def state(self) -> dict:
        return {"name": self.name, "temperature": self.temperature, "alpha": self.alpha,
                "data": self.task.state()}

    def describe(self) -> str:
        return f"distillation (T={self.temperature}, alpha={self.alpha}) on {self.task.describe()}"

    @property
    def tokenizer(self):
        return getattr(self.task, "tokenizer", None)
