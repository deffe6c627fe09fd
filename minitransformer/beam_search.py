r"""Beam search for encoder-decoder models with a KV cache (T5), beside greedy decoding.

Greedy decoding keeps the single most likely token at each step; beam search keeps the $n_b$ most
likely *prefixes* ($n_b$, the beam size). With $\log p(y) = \sum_t \log p(y_t \mid y_{<t}, x)$, every
step extends each of the $n_b$ hypotheses by every token, scores the $n_b V$ candidates by their summed
log-probability and keeps the best $n_b$:

$$\mathcal{B}_{t} = \operatorname{top-}n_b\,\{\, (y, v) : y \in \mathcal{B}_{t-1},\ v \in \mathcal{V} \,\}
\ \text{ by }\ \log p(y) + \log p(v \mid y, x).$$

A hypothesis that has produced EOS is finished: it may only be extended by EOS again, at no cost
(log-probability 0), so it keeps its score and its place while the others grow. With $n_b \ge$ the
number of possible outputs beam search is exhaustive search; with $n_b = 1$ it is greedy decoding.

The KV caches follow the hypotheses: after each step the rows of every cache are gathered by the
surviving hypotheses' parents (``T5DecodingState.reorder``), so nothing is recomputed. No length
normalisation is applied: the result is the most likely output under the model.
"""
from __future__ import annotations

from . import backend
from .nn.functional.softmax import log_softmax_forward


def _check(model, src, beam_size: int) -> None:
    if not all(hasattr(model, name) for name in ("start_decoding", "decode_step")):
        raise TypeError(f"beam_search needs an encoder-decoder with start_decoding and decode_step "
                        f"(T5), got {type(model).__name__}")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_search: beam_size must be a positive int, got {beam_size!r}")
    if not hasattr(src, "ndim") or src.ndim != 2:
        raise ValueError(f"beam_search: expected source ids of shape (B, S), got {getattr(src, 'shape', src)!r}")


# --8<-- [start:beam_search]
def beam_search(model, src, beam_size: int, max_new_tokens: int | None = None, eos_id: int | None = None):
    """The beam_size most likely outputs of each source: src (B, S) -> (tokens (B, n_b, t), scores (B, n_b)),
    best first; scores are summed log-probabilities (-inf for slots no hypothesis could fill)."""
    _check(model, src, beam_size)
    c = model.config
    xp = backend.get_array_module(src)
    B, nb = src.shape[0], beam_size
    eos = c.eos_id if eos_id is None else eos_id
    steps = c.max_tgt_len if max_new_tokens is None else min(max_new_tokens, c.max_tgt_len)
    was_training = model.training
    model.eval()
    state = model.start_decoding(src)
    state.reorder(xp.repeat(xp.arange(B), nb))                          # B sources -> B*nb hypotheses
    scores = xp.full((B, nb), -xp.inf)
    scores[:, 0] = 0.0                                                 # nb copies of one empty prefix
    token = xp.full(B * nb, c.pad_id, dtype=src.dtype)                  # the decoder starts at pad
    seqs = xp.zeros((B * nb, 0), dtype=src.dtype)
    finished = xp.zeros(B * nb, dtype=bool)
    for _ in range(steps):
        logp, _ = log_softmax_forward(model.decode_step(state, token).astype(scores.dtype))   # (B*nb, V)
        V = logp.shape[1]
        logp[finished] = -xp.inf                                       # a finished hypothesis ...
        logp[finished, eos] = 0.0                                      # ... only repeats EOS, for free
        cand = (scores.reshape(B * nb, 1) + logp).reshape(B, nb * V)     # (B*nb,1) + (B*nb,V) -> (B, nb*V)
        best = xp.argsort(-cand, axis=1, kind="stable")[:, :nb]         # (B, nb) flat candidate ids
        scores = xp.take_along_axis(cand, best, axis=1)                # (B, nb)
        parent = (xp.arange(B)[:, None] * nb + best // V).reshape(-1)   # (B, nb) -> (B*nb,) rows they extend
        token = (best % V).reshape(-1).astype(src.dtype)               # (B*nb,)
        seqs = xp.concatenate([seqs[parent], token[:, None]], axis=1)  # (B*nb, t+1)
        finished = finished[parent] | (token == eos)
        state.reorder(parent)                                          # the caches follow their hypotheses
        if bool(finished.all()):
            break
    model.train(was_training)
    return seqs.reshape(B, nb, -1), scores                              # (B*nb, t) -> (B, nb, t)
# --8<-- [end:beam_search]


def strip_after_eos(ids, eos_id: int) -> list[list[int]]:
    """Host lists of the ids of each row up to and including its first EOS."""
    rows = []
    for row in backend.to_numpy(ids).reshape(-1, ids.shape[-1]).tolist():
        rows.append(row[:row.index(eos_id) + 1] if eos_id in row else row)
    return rows
