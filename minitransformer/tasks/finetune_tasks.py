"""Labelled tasks for fine-tuning BERT, made from the built-in corpus without downloads.

* ``module`` (one sentence, 4 classes): which standard-library package a docstring sentence comes
  from, among the four with the most sentences (idlelib, tkinter, asyncio, email on CPython 3.11).
  Every class gets as many examples as the rarest one (so chance is 25%).
* ``adjacent`` (a sentence pair, 2 classes): does sentence B follow sentence A in its docstring
  (1), or is B from another docstring (0)? Half of each.

Examples come from the documents of each split of ``data/sentence_pairs.py`` (every tenth
docstring validates), so no validation sentence is seen in pretraining or fine-tuning.
``label_fraction`` keeps that fraction of the training examples (per class, at least one each):
the "1% of the labels" of transfer learning. Batches are ``(tokens, segments, labels)``.
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side examples and accuracy

from .. import backend
from ..data.sentence_pairs import NOT_NEXT, SentenceData, pad_batch
from ..data.wordpiece import CLS_ID, SEP_ID
from .base import Task

N_MODULE_CLASSES = 4


def single_sentence(ids, max_len: int):
    """([CLS] s [SEP], zeros) cut to max_len."""
    ids = np.concatenate([[CLS_ID], ids[:max_len - 2], [SEP_ID]]).astype(np.int64)
    return ids, np.zeros(ids.size, np.int64)


def module_examples(data: SentenceData, split: str, classes: list):
    """(ids, segments, label) of every sentence of the documents of the chosen modules, balanced."""
    by_class = {c: [] for c in range(len(classes))}
    for label, sents in data.docs[split]:
        if label in classes:
            by_class[classes.index(label)].extend(single_sentence(s, data.max_len) for s in sents)
    n = min(len(v) for v in by_class.values())
    return [(ids, seg, c) for c, rows in by_class.items() for ids, seg in rows[:n]]


def module_classes(data: SentenceData) -> list:
    """The N_MODULE_CLASSES modules with the most training sentences (ties by name)."""
    counts = {}
    for label, sents in data.docs["train"]:
        counts[label] = counts.get(label, 0) + len(sents)
    ranked = sorted((-n, label) for label, n in counts.items() if label)
    if len(ranked) < N_MODULE_CLASSES:
        raise ValueError(f"the module task needs documents labelled by module (the built-in corpus); "
                         f"these documents name {len(ranked)} module(s)")
    return [label for _, label in ranked[:N_MODULE_CLASSES]]


def adjacent_examples(data: SentenceData, split: str, seed: int):
    """(ids, segments, label) for every anchor: label 1 when B follows A, 0 when B is from
    another document (every example's choice fixed by its own generator)."""
    out = []
    for anchor in range(data.n_examples(split)):
        rng = np.random.default_rng([seed, 7, anchor])
        ids, seg, nsp = data.pair(split, anchor, bool(rng.random() < 0.5), rng)
        out.append((ids, seg, 0 if nsp == NOT_NEXT else 1))
    return out


# --8<-- [start:labelled_task]
class LabelledTask(Task):
    """Fixed labelled examples: batches drawn from the (kept) training ones, accuracy on all the
    validation ones."""

    def __init__(self, name: str, train, val, class_names: list, tokenizer, label_fraction: float = 1.0,
                 seed: int = 0, val_batch_size: int = 128):
        if not 0 < label_fraction <= 1:
            raise ValueError(f"label_fraction must lie in (0, 1], got {label_fraction}")
        self.name, self.class_names, self.tokenizer = name, list(class_names), tokenizer
        self.n_classes, self.label_fraction, self.val_batch_size = len(class_names), label_fraction, val_batch_size
        self.train_examples = keep_fraction(train, label_fraction, self.n_classes, seed)
        self.val_examples = val

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        pool = self.train_examples if split == "train" else self.val_examples
        return collate([pool[i] for i in rng.integers(len(pool), size=batch_size)])

    def predictions(self, model):
        """(labels, predicted) over every validation example, model in eval mode."""
        was_training = model.training
        model.eval()
        labels, predicted = [], []
        try:
            with model.no_grad():
                for start in range(0, len(self.val_examples), self.val_batch_size):
                    tokens, segments, y = collate(self.val_examples[start:start + self.val_batch_size])
                    logits, _ = model.forward(backend.to_device(tokens, model.device),
                                              backend.to_device(segments, model.device))
                    labels.append(y)
                    predicted.append(backend.to_numpy(logits).argmax(axis=-1))
        finally:
            model.train(was_training)
        return np.concatenate(labels), np.concatenate(predicted)

    def metrics(self, model) -> dict:
        labels, predicted = self.predictions(model)
        return {"accuracy": float((labels == predicted).mean())}
# --8<-- [end:labelled_task]

    def adapt(self, config):
        return dataclasses.replace(config, n_classes=self.n_classes) if hasattr(config, "n_classes") else config

    def baseline(self) -> float:
        return float(np.log(self.n_classes))

    def state(self) -> dict:
        return {"name": self.name, "classes": self.class_names, "label_fraction": self.label_fraction}

    def describe(self) -> str:
        return (f"fine-tuning task {self.name!r}: {len(self.train_examples):,} labelled training examples "
                f"({self.label_fraction:.0%}), {len(self.val_examples):,} held out, classes {self.class_names}")


def keep_fraction(examples, fraction: float, n_classes: int, seed: int):
    """`fraction` of the examples of each class (at least one per class), chosen at random."""
    rng = np.random.default_rng([seed, 11])
    kept = []
    for c in range(n_classes):
        rows = [e for e in examples if e[2] == c]
        if not rows:
            raise ValueError(f"no training example of class {c}")
        n = max(1, int(round(fraction * len(rows))))
        kept.extend(rows[i] for i in sorted(rng.choice(len(rows), n, replace=False)))
    return kept


def collate(examples):
    """(tokens, segments, labels) of (ids, segments, label) examples, right-padded."""
    return (pad_batch([e[0] for e in examples]), pad_batch([e[1] for e in examples], 0),
            np.array([e[2] for e in examples], dtype=np.int64))


TASKS = {
    "module": "which of 4 standard-library packages a docstring sentence comes from (one sentence)",
    "adjacent": "whether sentence B follows sentence A in its docstring (a sentence pair)",
}


def make_finetune_task(name: str, data: SentenceData, label_fraction: float = 1.0, seed: int = 0) -> LabelledTask:
    """The labelled task `name` (see TASKS) on the documents of `data`."""
    if name not in TASKS:
        raise ValueError(f"unknown fine-tuning task {name!r}; known: {sorted(TASKS)}")
    if name == "module":
        classes = module_classes(data)
        train, val = (module_examples(data, s, classes) for s in ("train", "val"))
    else:
        classes = ["not adjacent", "adjacent"]
        train, val = (adjacent_examples(data, s, seed) for s in ("train", "val"))
    return LabelledTask(name, train, val, classes, data.tokenizer, label_fraction, seed)
