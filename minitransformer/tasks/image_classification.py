"""Image classification: random training batches from an `ImageSplit`, cross-entropy on the labels,
and the accuracy on the whole test set as the metric.

The splits: ``"train"`` draws from the training images; ``"val"`` draws from the held-out test images
(the loop's validation loss, and the checkpoint called ``best``, are therefore measured on them).
``test_accuracy`` is computed on every test image, in eval mode.
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side batches and accuracy

from .. import backend
from ..data.images import ImageSplit, load_digits_split, shapes_split
from .base import Task, to_device

IMAGE_SETS = ("digits", "shapes")


class ImageClassificationTask(Task):
    name = "image_classification"

    def __init__(self, data: ImageSplit, dataset: str = "custom", eval_batch_size: int = 512):
        if data.train_images.ndim != 4 or data.test_images.ndim != 4:
            raise ValueError(f"ImageClassificationTask: images must be (n, C, H, W), got "
                             f"{data.train_images.shape} and {data.test_images.shape}")
        self.data, self.dataset, self.eval_batch_size = data, dataset, eval_batch_size
        self.n_classes = data.n_classes

    @classmethod
    def named(cls, dataset: str = "digits", seed: int = 0):
        """The task on a named image set: "digits" (scikit-learn's 8x8 digits, stratified 80/20) or
        "shapes" (generated, 1024 training and 256 test images)."""
        if dataset == "digits":
            return cls(load_digits_split(0.2, seed), "digits")
        if dataset == "shapes":
            return cls(shapes_split(seed=seed), "shapes")
        raise ValueError(f"unknown image set {dataset!r}; known: {list(IMAGE_SETS)}")

    def adapt(self, config):
        """The ViT config with this data's image side, channels and number of classes."""
        channels, side, _ = self.data.image_shape
        return dataclasses.replace(config, image_size=side, channels=channels, n_classes=self.n_classes)

    def describe(self) -> str:
        return (f"{self.data.name}: {len(self.data.train_labels)} training and {len(self.data.test_labels)} "
                f"test images of shape {self.data.image_shape}, {self.n_classes} classes")

    def batch(self, split: str, batch_size: int, rng):
        """(images (B, C, S, S) float32, labels (B,) int64), drawn uniformly with replacement."""
        self.check_split(split)
        images, labels = ((self.data.train_images, self.data.train_labels) if split == "train"
                          else (self.data.test_images, self.data.test_labels))
        idx = rng.integers(0, len(labels), batch_size)
        return images[idx], labels[idx]

    def forward_backward(self, model, batch, dloss: float = 1.0) -> float:
        _, loss = model.forward(*self._on_model(batch, model))
        model.backward(dloss=dloss)
        return float(loss)

    def loss(self, model, batch) -> float:
        _, loss = model.forward(*self._on_model(batch, model))
        return float(loss)

    @staticmethod
    def _on_model(batch, model):
        """The images on the model's device and in its dtype (float64 runs too), the labels as they are."""
        images, labels = to_device(batch, model.device)
        return images.astype(model.dtype, copy=False), labels

    def predict(self, model, images) -> np.ndarray:
        """Predicted labels of host images (n, C, S, S), in eval mode and batches."""
        was_training = model.training
        model.eval()
        out = []
        try:
            with model.no_grad():
                for start in range(0, len(images), self.eval_batch_size):
                    x = backend.to_device(images[start:start + self.eval_batch_size], model.device)
                    x = x.astype(model.dtype, copy=False)
                    logits, _ = model.forward(x)
                    out.append(backend.to_numpy(logits).argmax(axis=-1))
        finally:
            model.train(was_training)
        return np.concatenate(out)

    def test_accuracy(self, model) -> float:
        return float((self.predict(model, self.data.test_images) == self.data.test_labels).mean())

    def metrics(self, model) -> dict:
        return {"test_accuracy": self.test_accuracy(model)}

    def baseline(self) -> float:
        """Cross-entropy of guessing uniformly: log(n_classes)."""
        return float(np.log(self.n_classes))

    def state(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "n_classes": self.n_classes,
                "image_shape": list(self.data.image_shape)}
