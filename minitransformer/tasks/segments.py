r"""Tasks read segment by segment, for models with memory (Transformer-XL, the Compressive Transformer).

A model with memory (one that has ``forward_segment(idx, memory, targets, mem_len)``) must see a
long text in order: segment $\tau+1$ of every batch row continues segment $\tau$ of the same row,
and the memory the model handed out after $\tau$ is given back with $\tau+1$. So:

* **training** reads ``train_batch(index, B, rng)``: micro-batch ``index`` is segment number
  ``index`` of B fixed streams (row b always reads stream b); the batch carries that number, and
  ``forward_backward`` reuses the memory it kept only when it belongs to the segment just before
  (it starts empty at segment 0, after a wrap-around, and after ``begin_training``, which the
  training loop calls once before its first step: at the start and at a resume);
* **evaluation** reads windows of ``eval_segments`` consecutive segments (``batch``), each from
  an empty memory, segment by segment; ``eval_mem_len`` may be longer than the training memory;
* a model without memory (a GPT) reads the same segments one by one, each on its own: its
  context is one segment, which is what "a GPT of the same context" means in the benchmarks.

The memory runs along each batch row, so these tasks cannot split a batch over threads or
processes (``splittable = False``).

`SegmentLMTask` is character-level language modelling of a text; `MemoryRecallTask` is a synthetic
task that only memory can solve: at fixed slots of every segment, output the value that stood at
the same slot ``lag`` segments earlier (a distance of ``lag * T`` tokens), and show a new one.
"""
from __future__ import annotations

import math

import numpy as np  # host-side data: token ids, seeds and targets

from ..models.model import IGNORE_INDEX
from .base import Task, to_device
from .causal_lm import CausalLMTask


def has_memory(model) -> bool:
    """Whether `model` reads segments with a memory (it has ``forward_segment``)."""
    return callable(getattr(model, "forward_segment", None))


# --8<-- [start:read_segments]
def read_segments(model, x, y, segment_len: int, memory=None, mem_len=None, dloss=None):
    """Read the window x, y (B, n*T) in order, T = segment_len, carrying the memory from segment to
    segment (a model without memory reads each segment alone). With dloss, backpropagate each
    segment's share of the window's mean loss right after its forward (the memory is a
    stop-gradient, so segments never need each other's activations). Returns (mean loss, memory)."""
    n_total = max(int((y != IGNORE_INDEX).sum()), 1)
    total = 0.0
    for start in range(0, x.shape[1], segment_len):
        xs, ys = x[:, start:start + segment_len], y[:, start:start + segment_len]
        counted = int((ys != IGNORE_INDEX).sum())
        if has_memory(model):
            _, loss, memory = model.forward_segment(xs, memory, ys, mem_len=mem_len)
        else:
            _, loss = model.forward(xs, ys)
        if dloss is not None:
            model.backward(dloss=dloss * counted / n_total)
        total += float(loss) * counted
    return total / n_total, memory
# --8<-- [end:read_segments]


class SegmentTask(Task):
    """Consecutive segments with a memory carried across training steps (see the module docstring).

    Subclasses implement ``stream_segment(split, row, segment) -> (x, y)`` (host int arrays of
    length segment_len) and ``windows(split, batch_size, rng) -> (x, y)`` of eval_segments segments.
    """

    splittable = False

    def __init__(self, segment_len: int, eval_segments: int = 4, eval_mem_len: int | None = None):
        for name, value in (("segment_len", segment_len), ("eval_segments", eval_segments)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be an int >= 1, got {value!r}")
        if eval_mem_len is not None and (not isinstance(eval_mem_len, int) or eval_mem_len < 0):
            raise ValueError(f"{type(self).__name__}: eval_mem_len must be None or an int >= 0, got {eval_mem_len!r}")
        self.segment_len, self.eval_segments, self.eval_mem_len = segment_len, eval_segments, eval_mem_len
        self._memory, self._memory_segment = None, None

    # -- training: consecutive segments, memory carried -------------------------------------------
    # --8<-- [start:segment_training]
    def segments_per_pass(self, batch_size: int) -> int:
        """How many segments each stream has before training wraps around to its start."""
        raise NotImplementedError

    def train_batch(self, index: int, batch_size: int, rng):
        """Segment `index` (mod the streams' length) of every stream: (x, y, segment number)."""
        segment = index % self.segments_per_pass(batch_size)
        rows = [self.stream_segment("train", b, segment, batch_size) for b in range(batch_size)]
        x = np.stack([r[0] for r in rows])                             # (B, T)
        y = np.stack([r[1] for r in rows])                             # (B, T)
        return x, y, np.full(batch_size, segment, dtype=np.int64)

    def begin_training(self, model) -> None:
        """Called by the training loop before its first step (fresh or resumed): no memory yet."""
        self._memory, self._memory_segment = None, None

    def forward_backward(self, model, batch, dloss: float = 1.0) -> float:
        if len(batch) == 2:                                            # a window: read it in order
            x, y = to_device(batch, model.device)
            return read_segments(model, x, y, self.segment_len, dloss=dloss)[0]
        x, y, segment = batch
        segment = int(segment[0])
        memory = self._memory if self._memory_segment == segment - 1 else None   # only the one just before
        x, y = to_device((x, y), model.device)
        if has_memory(model):
            _, loss, self._memory = model.forward_segment(x, memory, y)
            self._memory_segment = segment
        else:
            _, loss = model.forward(x, y)
        model.backward(dloss=dloss)
        return float(loss)
    # --8<-- [end:segment_training]

    # -- evaluation: windows read from an empty memory ---------------------------------------------
    def batch(self, split: str, batch_size: int, rng):
        self.check_split(split)
        return self.windows(split, batch_size, rng)

    def loss(self, model, batch) -> float:
        x, y = to_device(batch[:2], model.device)
        return read_segments(model, x, y, self.segment_len, mem_len=self.eval_mem_len)[0]

    def counted(self, batch) -> int:
        return int((batch[1] != IGNORE_INDEX).sum())

    def check_batch(self, model, batch) -> None:
        from ..nn.checks import check_token_ids
        check_token_ids(batch[0], f"{self.name} inputs", model.config.vocab_size)


class SegmentLMTask(SegmentTask, CausalLMTask):
    """Character-level language modelling read in consecutive segments.

    Training: the training text is cut into B equal streams (row b reads the b-th part), each read
    segment after segment. Evaluation: random windows of eval_segments segments of the split.
    """

    name = "segment-lm"

    def __init__(self, train_ids, val_ids, segment_len: int, tokenizer=None, eval_segments: int = 4,
                 eval_mem_len: int | None = None):
        SegmentTask.__init__(self, segment_len, eval_segments, eval_mem_len)
        CausalLMTask.__init__(self, train_ids, val_ids, segment_len * eval_segments, tokenizer)
        self.block_size = segment_len                                 # what the model reads at once

    @classmethod
    def from_text(cls, text: str, segment_len: int, val_fraction: float = 0.1, tokenizer=None,
                  eval_segments: int = 4, eval_mem_len: int | None = None):
        base = CausalLMTask.from_text(text, segment_len * eval_segments, val_fraction, tokenizer)
        return cls(base.train_ids, base.val_ids, segment_len, base.tokenizer, eval_segments, eval_mem_len)

    def segments_per_pass(self, batch_size: int) -> int:
        n = (len(self.train_ids) // batch_size - 1) // self.segment_len
        if n < 1:
            raise ValueError(f"{self.name}: the training split ({len(self.train_ids)} tokens) cut into "
                             f"{batch_size} streams leaves fewer than segment_len + 1 = {self.segment_len + 1} "
                             "tokens per stream; use a longer text or a smaller batch")
        return n

    def stream_segment(self, split: str, row: int, segment: int, batch_size: int):
        part = len(self.train_ids) // batch_size                      # stream b = ids[b*part : (b+1)*part]
        start = row * part + segment * self.segment_len
        ids = self.train_ids[start:start + self.segment_len + 1]
        return ids[:-1].astype(np.int64), ids[1:].astype(np.int64)

    def windows(self, split: str, batch_size: int, rng):
        ids = self.train_ids if split == "train" else self.val_ids
        from ..data.batching import get_batch
        return get_batch(ids, batch_size, self.segment_len * self.eval_segments, rng)   # (B, n*T) twice

    def counted(self, batch) -> int:
        return batch[1].size

    def state(self) -> dict:
        return {"name": self.name, "segment_len": self.segment_len, "eval_segments": self.eval_segments,
                "eval_mem_len": self.eval_mem_len}

    def describe(self) -> str:
        val = 0 if self.val_ids is None else len(self.val_ids)
        return (f"segment LM: train {len(self.train_ids):,} / val {val:,} tokens, segments of "
                f"{self.segment_len}, evaluated over {self.eval_segments} consecutive segments")


# --8<-- [start:memory_recall]
class MemoryRecallTask(SegmentTask):
    """Recall across segments: a solution needs a memory reaching lag * segment_len tokens back.

    Every segment holds random filler tokens, except at its `slots` (positions 0, stride, 2*stride,
    ...) where it shows fresh random values. The target at a slot is the value that stood at the
    same slot `lag` segments earlier (none in a stream's first `lag` segments), a distance of
    exactly lag * T. A model whose context ends at the segment's start answers at chance,
    1 / n_values. Streams are generated from (seed, split, row, segment), so any segment can be
    rebuilt without keeping the stream.
    """

    name = "memory-recall"
    splits = ("train", "val")

    def __init__(self, segment_len: int = 16, lag: int = 1, n_values: int = 8, n_filler: int = 4,
                 stride: int = 4, eval_segments: int | None = None, eval_mem_len: int | None = None,
                 seed: int = 0):
        for name, value, low in (("lag", lag, 1), ("n_values", n_values, 2), ("n_filler", n_filler, 1),
                                 ("stride", stride, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"MemoryRecallTask: {name} must be an int >= {low}, got {value!r}")
        if stride > segment_len:
            raise ValueError(f"MemoryRecallTask: stride={stride} exceeds segment_len={segment_len}")
        SegmentTask.__init__(self, segment_len, eval_segments or lag + 2, eval_mem_len)
        self.lag, self.n_values, self.n_filler, self.stride, self.seed = lag, n_values, n_filler, stride, seed
        self.slots = np.arange(0, segment_len, stride)                # positions that show / ask a value
        self.vocab_size = n_filler + n_values                         # fillers first, then the values

    def chance_accuracy(self) -> float:
        return 1.0 / self.n_values

    def baseline(self) -> float:
        """The loss of a uniform guess among the values, ln(n_values): what no memory gives."""
        return math.log(self.n_values)

    def adapt(self, config):
        import dataclasses
        return dataclasses.replace(config, vocab_size=self.vocab_size)

    def segments_per_pass(self, batch_size: int) -> int:
        return 2 ** 31                                                # streams never end

    def _tokens(self, split: str, row: int, segment: int):
        """(filler-and-values tokens (T,), the values at the slots)."""
        rng = np.random.default_rng([self.seed, self.splits.index(split), row, segment])
        tokens = rng.integers(0, self.n_filler, self.segment_len)
        values = rng.integers(0, self.n_values, len(self.slots)) + self.n_filler
        tokens[self.slots] = values
        return tokens, values

    def stream_segment(self, split: str, row: int, segment: int, batch_size: int = 0):
        x, _ = self._tokens(split, row, segment)
        y = np.full(self.segment_len, IGNORE_INDEX, dtype=np.int64)
        if segment >= self.lag:
            y[self.slots] = self._tokens(split, row, segment - self.lag)[1]   # the values lag segments back
        return x.astype(np.int64), y

    def windows(self, split: str, batch_size: int, rng):
        """eval_segments segments from the start of random streams (rows drawn from rng)."""
        rows = rng.integers(0, 2 ** 31, batch_size)
        segs = [[self.stream_segment(split, int(r), s) for s in range(self.eval_segments)] for r in rows]
        x = np.stack([np.concatenate([s[0] for s in row]) for row in segs])   # (B, n*T)
        y = np.stack([np.concatenate([s[1] for s in row]) for row in segs])   # (B, n*T)
        return x, y
# --8<-- [end:memory_recall]

    def accuracy(self, model, batches: int = 4, batch_size: int = 16, seed: int = 12345) -> float:
        """Fraction of slots answered right (argmax) on validation windows, memory carried."""
        rng = np.random.default_rng(seed)
        right = total = 0
        was_training = model.training
        model.eval()
        with model.no_grad():
            for _ in range(batches):
                x, y = self.windows("val", batch_size, rng)
                right_b, total_b = _count_right(model, x, y, self.segment_len, self.eval_mem_len)
                right, total = right + right_b, total + total_b
        model.train(was_training)
        return right / max(total, 1)

    def metrics(self, model) -> dict:
        return {"recall_accuracy": self.accuracy(model, batches=2)}

    def state(self) -> dict:
        return {"name": self.name, "segment_len": self.segment_len, "lag": self.lag, "n_values": self.n_values,
                "n_filler": self.n_filler, "stride": self.stride, "seed": self.seed}

    def describe(self) -> str:
        return (f"memory recall: {len(self.slots)} values per segment of {self.segment_len}, asked "
                f"{self.lag * self.segment_len} tokens later; chance accuracy {self.chance_accuracy():.3f}")


def _count_right(model, x, y, segment_len: int, mem_len):
    """(correct argmax predictions, counted targets) over a window read in order."""
    from .. import backend
    xd = backend.to_device(x, model.device)
    memory, right, total = None, 0, 0
    for start in range(0, x.shape[1], segment_len):
        xs, ys = xd[:, start:start + segment_len], y[:, start:start + segment_len]
        if has_memory(model):
            logits, _, memory = model.forward_segment(xs, memory, mem_len=mem_len)
        else:
            logits, _ = model.forward(xs)
        pred = backend.to_numpy(logits).argmax(-1)                   # (B, T)
        keep = ys != IGNORE_INDEX
        right += int((pred[keep] == ys[keep]).sum())
        total += int(keep.sum())
    return right, total
