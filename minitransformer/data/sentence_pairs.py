"""Documents of sentences, and the sentence pairs of next-sentence prediction, without downloads.

A *document* is one standard-library docstring (the built-in corpus, labelled with its module) or
one blank-line-separated block of a text file (``--data FILE``). Its sentences are cut at ``.``,
``!`` or ``?`` followed by white space; doctest lines (``>>>``, ``...``) are dropped, and so are
sentences of fewer than `min_words` words.

Every document goes to the training or the validation split by its index (every tenth to
validation), so both splits hold every module, and a validation sentence never trains.

`SentenceData` tokenises the documents once and builds the examples of BERT's pretraining:

* ``pair(split, anchor, is_next, rng)``: ``[CLS] A [SEP] B [SEP]`` with A the anchor sentence and B
  the sentence that follows it (IsNext, label 0) or a random sentence of another document
  (NotNext, label 1); the longer side is cut until the pair fits (BERT's ``truncate_seq_pair``);
* ``packed(split, anchor)``: ``[CLS] s_i s_{i+1} ... [SEP]``, consecutive sentences of one document
  up to the length limit, one segment (RoBERTa's inputs, without NSP).
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

import numpy as np  # host side: token ids and index tables

from .wordpiece import CLS_ID, PAD_ID, SEP_ID

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)")
IS_NEXT, NOT_NEXT = 0, 1


class Document(NamedTuple):
    label: str              # the module a docstring comes from ("" for a text file's block)
    sentences: list         # list of str


def split_sentences(text: str, min_words: int = 3) -> list[str]:
    """The sentences of one document, white space collapsed, doctest lines dropped."""
    lines = [line for line in text.splitlines() if not _DOCTEST.match(line)]
    flat = " ".join(" ".join(lines).split())
    return [s for s in _SENTENCE_END.split(flat) if len(s.split()) >= min_words]


def corpus_documents(max_chars: int | None = None, min_words: int = 3) -> list[Document]:
    """Docstrings of the standard library (``data/corpus.py``) as documents labelled by module,
    all of them or up to `max_chars` characters of docstring text (a prefix of the whole list).
    Read once per process (parsing the library takes seconds); callers must not modify them."""
    return list(_corpus_documents(max_chars, min_words))


@functools.lru_cache(maxsize=2)
def _corpus_documents(max_chars, min_words) -> tuple:
    from .corpus import stdlib_docstrings

    docs, total = [], 0
    for module, doc in stdlib_docstrings():
        sentences = split_sentences(doc, min_words)
        if sentences:
            docs.append(Document(module, sentences))
        total += len(doc)
        if max_chars is not None and total >= max_chars:
            break
    return tuple(docs)


def text_documents(text: str, min_words: int = 3) -> list[Document]:
    """The blank-line-separated blocks of a text, each a document."""
    docs = [Document("", split_sentences(block, min_words)) for block in re.split(r"\n\s*\n", text)]
    docs = [d for d in docs if d.sentences]
    if len(docs) < 2:
        raise ValueError(f"the text has {len(docs)} document(s) of sentences; next-sentence prediction "
                         "needs at least two (separate documents by blank lines)")
    return docs


def document_split(index: int) -> str:
    """Every tenth document validates."""
    return "val" if index % 10 == 9 else "train"


def documents_text(docs: list[Document], split: str = "train") -> str:
    """The sentences of the documents of `split`, one per line (what the tokenizer trains on)."""
    return "\n".join(s for i, d in enumerate(docs) if document_split(i) == split for s in d.sentences)


# --8<-- [start:sentence_data]
class SentenceData:
    """Tokenised documents of both splits and the anchors (document, sentence) of each split."""

    def __init__(self, docs: list[Document], tokenizer, max_len: int):
        if max_len < 5:
            raise ValueError(f"SentenceData: max_len={max_len} cannot hold [CLS] A [SEP] B [SEP]; use >= 5")
        self.tokenizer, self.max_len = tokenizer, max_len
        self.docs = {"train": [], "val": []}               # split -> list of (label, [ids per sentence])
        for i, d in enumerate(docs):
            ids = [tokenizer.encode(s) for s in d.sentences]
            self.docs[document_split(i)].append((d.label, [a for a in ids if a.size]))
        self.anchors = {}                                  # split -> (N, 2) (document, sentence) with a next one
        for split, items in self.docs.items():
            if len(items) < 2:
                raise ValueError(f"SentenceData: the {split} split has {len(items)} document(s); "
                                 "next-sentence prediction needs two or more (give more text)")
            rows = [(j, k) for j, (_, sents) in enumerate(items) for k in range(len(sents) - 1)]
            if not rows:
                raise ValueError(f"SentenceData: no document of the {split} split has two sentences")
            self.anchors[split] = np.array(rows, dtype=np.int64)

    def n_examples(self, split: str) -> int:
        return len(self.anchors[split])

    def sentence(self, split: str, doc: int, k: int):
        return self.docs[split][doc][1][k]

    def random_sentence(self, split: str, not_doc: int, rng):
        """A sentence of a document other than `not_doc` (NSP's negative)."""
        n = len(self.docs[split])
        doc = int(rng.integers(n - 1))
        doc += doc >= not_doc                              # skip not_doc, uniform over the others
        sents = self.docs[split][doc][1]
        return sents[int(rng.integers(len(sents)))]

    def pair(self, split: str, anchor: int, is_next: bool, rng):
        """(ids, segments, label): [CLS] A [SEP] B [SEP] for anchor `anchor` of `split`."""
        doc, k = self.anchors[split][anchor]
        a = self.sentence(split, doc, k)
        b = self.sentence(split, doc, k + 1) if is_next else self.random_sentence(split, doc, rng)
        a, b = truncate_pair(a, b, self.max_len - 3)
        ids = np.concatenate([[CLS_ID], a, [SEP_ID], b, [SEP_ID]]).astype(np.int64)
        segments = np.zeros(ids.size, np.int64)
        segments[a.size + 2:] = 1                          # B and its [SEP]
        return ids, segments, IS_NEXT if is_next else NOT_NEXT

    def packed(self, split: str, anchor: int):
        """(ids, segments): [CLS] then consecutive sentences from the anchor on, then [SEP]."""
        doc, k = self.anchors[split][anchor]
        sents, room, body = self.docs[split][doc][1], self.max_len - 2, []
        for s in sents[k:]:
            if body and sum(x.size for x in body) + s.size > room:
                break
            body.append(s)
        ids = np.concatenate([[CLS_ID], np.concatenate(body)[:room], [SEP_ID]]).astype(np.int64)
        return ids, np.zeros(ids.size, np.int64)
# --8<-- [end:sentence_data]


def truncate_pair(a, b, budget: int):
    """Cut the longer of a and b by one token at a time until len(a) + len(b) <= budget."""
    la, lb = a.size, b.size
    while la + lb > budget:
        if la >= lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb]


def pad_batch(rows: list, fill: int = PAD_ID):
    """Stack 1-D int arrays into (B, T_longest), right-padded with `fill`."""
    T = max(r.size for r in rows)
    out = np.full((len(rows), T), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :r.size] = r
    return out
