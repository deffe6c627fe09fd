"""Image classification: random training batches from an `ImageSplit`, cross-entropy on the labels,
and the accuracy on the whole test set as the metric.

The splits: ``"train"`` draws from the training images; ``"val"`` draws from the validation images,
carved out of the training part before training and never trained on (the loop's validation loss,
and the checkpoint called ``best``, are measured on them). The test images are used only by
``test_accuracy``, computed on every test image, in eval mode, when the loop reports its metrics.
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
        parts = {"train": (data.train_images, data.train_labels), "val": (data.val_images, data.val_labels),
                 "test": (data.test_images, data.test_labels)}
        for part, (images, labels) in parts.items():
            if images.ndim != 4 or images.shape[1:] != data.train_images.shape[1:]:
                raise ValueError(f"ImageClassificationTask: {part} images must be (n, C, H, W) like the training "
                                 f"images {data.train_images.shape}, got {images.shape}")
            if labels.shape != (len(images),) or len(images) == 0:
                raise ValueError(f"ImageClassificationTask: the {part} part needs one label per image and at "
                                 f"least one image, got images {images.shape} and labels {labels.shape}")
        self.data, self.dataset, self.eval_batch_size = data, dataset, eval_batch_size
        self.n_classes = data.n_classes

    @classmethod
    def named(cls, dataset: str = "digits", seed: int = 0):
        """The task on a named image set: "digits" (scikit-learn's 8x8 digits, stratified 80/20
        train/test, 10% of the training part held out for validation) or "shapes" (generated: 1024
        training images, 10% of them held out for validation, and 256 test images)."""
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
        return (f"{self.data.name}: {len(self.data.train_labels)} training, {len(self.data.val_labels)} "
                f"validation and {len(self.data.test_labels)} test images of shape {self.data.image_shape}, "
                f"{self.n_classes} classes")

    def batch(self, split: str, batch_size: int, rng):
        """(images (B, C, S, S) float32, labels (B,) int64), drawn uniformly with replacement from the
        training images ("train") or the validation images ("val"); never from the test images."""
        self.check_split(split)
        images, labels = ((self.data.train_images, self.data.train_labels) if split == "train"
                          else (self.data.val_images, self.data.val_labels))
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
        """Accuracy on every test image."""
        return float((self.predict(model, self.data.test_images) == self.data.test_labels).mean())

    def val_accuracy(self, model) -> float:
        """Accuracy on every validation image (for choosing settings; the test part stays unseen)."""
        return float((self.predict(model, self.data.val_images) == self.data.val_labels).mean())

    def metrics(self, model) -> dict:
        return {"test_accuracy": self.test_accuracy(model)}

    def baseline(self) -> float:
        """Cross-entropy of guessing uniformly: log(n_classes)."""
        return float(np.log(self.n_classes))

    def state(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "n_classes": self.n_classes,
                "image_shape": list(self.data.image_shape), "split": self.data.name,
                "n_train": len(self.data.train_labels), "n_val": len(self.data.val_labels),
                "n_test": len(self.data.test_labels)}
