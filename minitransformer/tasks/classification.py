"""Classification: batches of (inputs, labels) from a generator, cross-entropy on the labels, and
accuracy as the metric. The long-range retrieval task (``data/long_range.py``) is one."""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side labels and accuracy

from .. import backend
from .base import Task


class ClassificationTask(Task):
    """`make_batch(batch_size, rng) -> (inputs, labels)`; validation batches come from a fixed seed."""

    name = "classification"

    def __init__(self, make_batch, n_classes: int, val_batches: int = 0, val_batch_size: int = 256,
                 val_seed: int = 10_000, config_fields: dict | None = None, description: str = ""):
        self.make_batch, self.n_classes = make_batch, n_classes
        self.config_fields, self.description = dict(config_fields or {}), description
        self.val_batches, self.val_batch_size, self.val_seed = val_batches, val_batch_size, val_seed
        self.splits = ("train", "val") if val_batches else ("train",)

    def adapt(self, config):
        """The model config with the sizes this data needs (`config_fields`: vocabulary, classes, ...)."""
        return dataclasses.replace(config, **self.config_fields) if self.config_fields else config

    def describe(self) -> str:
        return self.description or f"classification into {self.n_classes} classes"

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        return self.make_batch(batch_size, rng)

    def predictions(self, model):
        """(inputs, labels, predicted labels) of the fixed validation batches, model in eval mode."""
        rng = np.random.default_rng(self.val_seed)
        was_training = model.training
        model.eval()
        inputs, labels, predicted = [], [], []
        with model.no_grad():
            for _ in range(max(self.val_batches, 1)):
                x, y = self.make_batch(self.val_batch_size, rng)
                logits, _ = model.forward(backend.to_device(x, model.device))
                inputs.append(x)
                labels.append(y)
                predicted.append(backend.to_numpy(logits).argmax(axis=-1))
        model.train(was_training)
        return np.concatenate(inputs), np.concatenate(labels), np.concatenate(predicted)

    def metrics(self, model) -> dict:
        _, labels, predicted = self.predictions(model)
        return {"accuracy": float((labels == predicted).mean())}

    def baseline(self) -> float:
        """Cross-entropy of guessing uniformly: log(n_classes)."""
        return float(np.log(self.n_classes))

    def state(self) -> dict:
        return {"name": self.name, "n_classes": self.n_classes}
