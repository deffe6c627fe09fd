"""A task: where the batches come from, and how the loss and the metrics of a batch are computed.

The training loop (``train.fit``) runs any task on any model. A task provides

* ``batch(split, batch_size, rng)``: a tuple of host arrays whose first axis is the batch (``split``
  is ``"train"`` or ``"val"``; ``splits`` says which exist); the training loop asks
  ``train_batch(index, batch_size, rng)`` for its micro-batch number ``index`` (by default a fresh
  ``batch("train", ...)``; a task whose batches continue each other, such as consecutive segments
  for a model with memory, uses the index) and calls ``begin_training(model)`` once before its
  first step, fresh or resumed; ``splittable = False`` keeps a batch whole (no threads or MPI ranks);
* ``forward_backward(model, batch, dloss)``: the batch's mean loss (a float), its gradient times
  ``dloss`` added into the model's ``Parameter.grad``; ``loss(model, batch)``: the loss alone;
* ``counted(batch)``: how many targets the batch's mean runs over (a data-parallel split weighs each
  shard by it, so unequal shards and ignored targets stay exact);
* ``metrics(model)``: extra validation numbers (accuracy, ...), and ``baseline()``: a reference loss;
* ``state()``: what a checkpoint keeps to rebuild the task's view of the data (the tokenizer, ...);
  ``adapt(config)``: the model config this task needs (the vocabulary size, say).

The default ``forward_backward`` fits every model of the contract in ``models/model.py``:
``forward(*inputs, targets) -> (output, loss)`` then ``backward(dloss=...)``.
"""
from __future__ import annotations

from .. import backend
from ..models.model import IGNORE_INDEX


# --8<-- [start:task]
class Task:
    """Base class; subclasses implement ``batch`` and set ``name``."""

    name = "task"
    splits = ("train", "val")
    splittable = True       # False: the rows of a batch carry state and may not be split up

    def batch(self, split: str, batch_size: int, rng):
        raise NotImplementedError

    def train_batch(self, index: int, batch_size: int, rng):
        """The training loop's micro-batch number `index` (step * grad_accum + micro-batch)."""
        return self.batch("train", batch_size, rng)

    def begin_training(self, model) -> None:
        """Called once before the first training step (also on resume); by default nothing."""

    def adapt(self, config):
        """The model config this task trains (by default the one given)."""
        return config

    def forward_backward(self, model, batch, dloss: float = 1.0) -> float:
        _, loss = model.forward(*to_device(batch, model.device))
        model.backward(dloss=dloss)
        return float(loss)

    def loss(self, model, batch) -> float:
        _, loss = model.forward(*to_device(batch, model.device))
        return float(loss)

    def check_batch(self, model, batch) -> None:
        """Check a host batch's values (token ids in range, say) before it goes to a GPU, where the
        model's own checks would each cost a host sync; the loop then runs the model inside
        ``nn.checks.values_checked_on_host()``. Tasks whose batches are valid by construction
        (ids from their own tokenizer or generator) may leave this empty."""

    def counted(self, batch) -> int:
        """Targets (the last array of the batch) that are not IGNORE_INDEX."""
        return int((batch[-1] != IGNORE_INDEX).sum())

    def metrics(self, model) -> dict:
        return {}

    def baseline(self) -> float | None:
        return None

    def state(self) -> dict:
        return {"name": self.name}

    def describe(self) -> str:
        return self.name

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no {split!r} split; it has {list(self.splits)}")
# --8<-- [end:task]


def to_device(batch, device: str) -> tuple:
    """Every array of a batch on `device`."""
    return tuple(backend.to_device(a, device) for a in batch)
