r"""BERT's pretraining as a task: masked language modelling, plus next-sentence prediction.

A batch is ``(inputs, segments, mlm_targets, nsp_labels)`` (no ``nsp_labels`` when the model has no
NSP head); the model's loss is the MLM mean over the masked positions plus the NSP mean.

Examples are fixed by their index (an *anchor*: a sentence with a next one in its document). For
anchor $i$ a generator seeded with (seed, split, $i$) decides IsNext or NotNext (50/50) and draws
the negative, so the data is the same at every epoch. The masks (``data/masking.py``) are

* ``masking="static"`` (BERT): drawn from that same per-example generator, one mask per example
  for the whole run, as when the masked data is written to disk once;
* ``masking="dynamic"`` (RoBERTa): drawn anew every time the example is in a batch.

Without NSP the inputs are RoBERTa's: consecutive sentences of one document packed up to the length
limit, all in segment 0. A data-parallel split weighs each shard by its masked positions
(``counted``): exact for the MLM mean, and for the NSP mean as long as shards hold about as many
masked positions per sequence (each sequence has round(0.15 n) of them).
"""
from __future__ import annotations

import dataclasses

import numpy as np  # host-side batches and metrics

from .. import backend
from ..data.masking import mask_tokens
from ..data.sentence_pairs import SentenceData, corpus_documents, documents_text, pad_batch, text_documents
from ..data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from ..models.model import IGNORE_INDEX
from .base import Task

SPLIT_CODE = {"train": 0, "val": 1}


def default_min_frequency(n_words: int, vocab_size: int) -> int:
    """The WordPiece merge threshold used here: about n_words / (2 V), at least 2 (measured on the
    built-in corpus: V=1000 -> 100, V=2000 -> 50 give whole common words and ~25-token sentences)."""
    return max(2, n_words // (2 * vocab_size))


def train_tokenizer(text: str, vocab_size: int) -> WordPieceTokenizer:
    """A lowercase WordPiece vocabulary of `vocab_size` tokens learnt from `text`."""
    n_words = len(text.split())
    return WordPieceTokenizer.train(text, vocab_size, lowercase=True,
                                    min_frequency=default_min_frequency(n_words, vocab_size))


def load_documents(data=None, max_chars: int | None = None):
    """Documents from a text file (blank-line separated) or from the built-in corpus (every
    standard-library docstring unless `max_chars` limits it)."""
    if data:
        from ..data.corpus import load_text
        return text_documents(load_text(data))
    return corpus_documents(max_chars)


# --8<-- [start:pretraining_task]
class BertPretrainingTask(Task):
    """MLM (+ NSP) batches from `SentenceData`; `masking` "static" or "dynamic"."""

    name = "bert-pretraining"

    def __init__(self, data: SentenceData, nsp: bool = True, masking: str = "static", seed: int = 0,
                 val_batches: int = 4, val_batch_size: int = 64):
        if masking not in ("static", "dynamic"):
            raise ValueError(f"BertPretrainingTask: masking must be 'static' or 'dynamic', got {masking!r}")
        self.data, self.tokenizer, self.nsp, self.masking, self.seed = data, data.tokenizer, nsp, masking, seed
        self.val_batches, self.val_batch_size = val_batches, val_batch_size

    def example(self, split: str, anchor: int, rng=None):
        """(ids, segments, nsp label or None, the example's own generator)."""
        own = np.random.default_rng([self.seed, SPLIT_CODE[split], int(anchor)])
        if not self.nsp:
            ids, segments = self.data.packed(split, anchor)
            return ids, segments, None, own
        ids, segments, label = self.data.pair(split, anchor, bool(own.random() < 0.5), own)
        return ids, segments, label, own

    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        V = self.tokenizer.vocab_size
        anchors = rng.integers(self.data.n_examples(split), size=batch_size)
        rows, segs, labels, targets = [], [], [], []
        for a in anchors:
            ids, segments, label, own = self.example(split, a)
            if self.masking == "static":                   # the example's mask, the same every time
                ids, tgt = mask_tokens(ids[None], V, own)
                ids, tgt = ids[0], tgt[0]
                targets.append(tgt)
            rows.append(ids)
            segs.append(segments)
            labels.append(label)
        tokens = pad_batch(rows)                           # (B, T_longest), [PAD] = 0
        segments = pad_batch(segs, 0)
        if self.masking == "static":
            mlm_targets = pad_batch(targets, IGNORE_INDEX)
        else:                                              # a fresh mask at every draw
            tokens, mlm_targets = mask_tokens(tokens, V, rng)
        if not self.nsp:
            return tokens, segments, mlm_targets
        return tokens, segments, mlm_targets, np.array(labels, dtype=np.int64)
# --8<-- [end:pretraining_task]

    def adapt(self, config):
        return dataclasses.replace(config, vocab_size=self.tokenizer.vocab_size)

    def counted(self, batch) -> int:
        return int((batch[2] != IGNORE_INDEX).sum())      # the masked positions

    def check_batch(self, model, batch) -> None:
        from ..nn.checks import check_token_ids
        check_token_ids(batch[0], "BERT pretraining inputs", model.config.vocab_size, model.config.max_len)

    def val_batches_fixed(self):
        rng = np.random.default_rng(10_000)
        return [self.batch("val", self.val_batch_size, rng) for _ in range(self.val_batches)]

    def metrics(self, model) -> dict:
        """On fixed validation batches: the MLM loss alone, MLM accuracy on the masked positions and
        (with NSP) NSP accuracy."""
        mlm_losses, hits, masked, nsp_hits, seqs = [], 0, 0, 0, 0
        for batch in self.val_batches_fixed():
            tokens, segments, targets = (backend.to_device(a, model.device) for a in batch[:3])
            logits, nsp_logits = model.predict(tokens, segments)
            mlm_losses.append(mlm_loss(model, tokens, segments, targets))
            predicted = backend.to_numpy(logits).argmax(axis=-1)
            keep = batch[2] != IGNORE_INDEX
            hits += int((predicted[keep] == batch[2][keep]).sum())
            masked += int(keep.sum())
            if self.nsp:
                nsp_hits += int((backend.to_numpy(nsp_logits).argmax(axis=-1) == batch[3]).sum())
                seqs += len(batch[3])
        out = {"mlm_loss": float(np.mean(mlm_losses)), "mlm_accuracy": hits / max(masked, 1)}
        if self.nsp:
            out["nsp_accuracy"] = nsp_hits / max(seqs, 1)
        return out

    def baseline(self) -> float:
        """Unigram baseline: predicting each masked token from the training-token frequencies
        (+ log 2 for NSP's coin)."""
        V = self.tokenizer.vocab_size
        counts = np.ones(V)
        for _, sents in self.data.docs["train"]:
            for s in sents:
                counts += np.bincount(s, minlength=V)
        counts[:len(SPECIAL_TOKENS)] = 0
        logp = np.log(counts / counts.sum() + 1e-30)
        val = np.concatenate([s for _, sents in self.data.docs["val"] for s in sents])
        return float(-logp[val].mean() + (np.log(2) if self.nsp else 0.0))

    def state(self) -> dict:
        return {"name": self.name, "nsp": self.nsp, "masking": self.masking, "max_len": self.data.max_len}

    def describe(self) -> str:
        what = "MLM + NSP" if self.nsp else "MLM only"
        return (f"BERT pretraining ({what}, {self.masking} masking): {self.data.n_examples('train'):,} train / "
                f"{self.data.n_examples('val'):,} val examples, WordPiece vocabulary {self.tokenizer.vocab_size}")


def mlm_loss(model, tokens, segments, targets) -> float:
    """The masked-LM loss alone (no NSP term), eval mode, no activations kept."""
    was_training = model.training
    model.eval()
    try:
        with model.no_grad():
            _, loss = model.forward(tokens, segments, targets)
    finally:
        model.train(was_training)
    return float(loss)


def pretraining_task(config, seed: int = 0, data=None, tokenizer=None, max_chars: int | None = None,
                     docs=None):
    """The task a `BertConfig` pretrains on: documents from `data` (a file) or the built-in corpus
    (or the `docs` given), a WordPiece tokenizer of config.vocab_size trained on the training
    documents (unless given)."""
    docs = docs if docs is not None else load_documents(data, max_chars)
    tokenizer = tokenizer or train_tokenizer(documents_text(docs, "train"), config.vocab_size)
    return BertPretrainingTask(SentenceData(docs, tokenizer, config.max_len), nsp=config.nsp,
                               masking=config.masking, seed=seed)
