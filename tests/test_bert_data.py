"""BERT's pretraining data: masking statistics (15%, 80/10/10, never [CLS]/[SEP]/[PAD]), NSP
balance and negatives from another document, static vs dynamic masking, the labelled tasks."""
import numpy as np
import pytest

from minitransformer.data.masking import mask_tokens
from minitransformer.data.sentence_pairs import (IS_NEXT, NOT_NEXT, Document, SentenceData, split_sentences,
                                                 text_documents, truncate_pair)
from minitransformer.data.wordpiece import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from minitransformer.models.model import IGNORE_INDEX
from minitransformer.tasks.bert_pretraining import BertPretrainingTask, train_tokenizer
from minitransformer.tasks.finetune_tasks import keep_fraction, make_finetune_task

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega").split()


def synthetic_documents(n_docs=30, seed=0):
    """Documents whose sentences name their document (doc7 ...), labelled by parity module."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(n_docs):
        sents = [f"doc{d} says " + " ".join(rng.choice(WORDS, 6)) + f" number{k}." for k in range(5)]
        docs.append(Document(f"mod{d % 4}", sents))
    return docs


@pytest.fixture(scope="module")
def data():
    docs = synthetic_documents()
    text = "\n".join(s for d in docs for s in d.sentences)
    return SentenceData(docs, train_tokenizer(text, 120), max_len=24)


def test_split_sentences_drops_doctest_lines_and_short_pieces():
    text = "Return the value.  It is cached!\n>>> f(1)\n... more\nWhy not? ok."
    assert split_sentences(text) == ["Return the value.", "It is cached!"]   # "Why not?" has 2 words
    assert split_sentences("one two three four?") == ["one two three four?"]


def test_text_documents_need_two():
    with pytest.raises(ValueError, match="at least two"):
        text_documents("just one block of words here.")
    assert len(text_documents("one two three.\n\nfour five six.")) == 2


def test_masking_statistics_over_many_batches():
    rng = np.random.default_rng(0)
    V, hits = 50, dict(chosen=0, maskable=0, mask=0, random=0, kept=0)
    for _ in range(200):
        lengths = rng.integers(3, 30, 16)
        lengths[0] = 3                                           # [CLS] [SEP] [SEP]: nothing to mask
        tokens = np.full((16, 32), PAD_ID)
        for i, n in enumerate(lengths):
            tokens[i, :n] = rng.integers(5, V, n)
            tokens[i, 0], tokens[i, n - 1] = CLS_ID, SEP_ID
            tokens[i, n // 2] = SEP_ID
        inputs, targets = mask_tokens(tokens, V, rng)
        chosen = targets != IGNORE_INDEX
        special = np.isin(tokens, (CLS_ID, SEP_ID, PAD_ID))
        assert not (chosen & special).any()                     # never [CLS], [SEP], padding
        assert (inputs[special] == tokens[special]).all()
        assert (inputs[~chosen] == tokens[~chosen]).all()        # unchosen positions untouched
        assert (targets[chosen] == tokens[chosen]).all()         # the target is the original token
        n_maskable = (~special).sum(axis=1)
        expected = np.where(n_maskable > 0, np.maximum(1, np.rint(0.15 * n_maskable)), 0)   # [CLS][SEP][SEP]: 0
        assert (chosen.sum(axis=1) == expected).all() and n_maskable[0] == 0
        hits["chosen"] += chosen.sum()
        hits["maskable"] += n_maskable.sum()
        hits["mask"] += (inputs[chosen] == MASK_ID).sum()
        changed = chosen & (inputs != tokens) & (inputs != MASK_ID)
        assert (inputs[changed] >= 5).all()                      # random tokens are ordinary ones
        hits["random"] += changed.sum()
        hits["kept"] += (chosen & (inputs == tokens)).sum()
    assert abs(hits["chosen"] / hits["maskable"] - 0.15) < 0.01
    # a random token equal to the original counts as kept: 10% + 10%/45 ~ 10.2%
    assert abs(hits["mask"] / hits["chosen"] - 0.8) < 0.01
    assert abs(hits["random"] / hits["chosen"] - 0.1 * 44 / 45) < 0.01
    assert abs(hits["kept"] / hits["chosen"] - (0.1 + 0.1 / 45)) < 0.01


def test_masking_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(np.array([[7, 8]]), 10, rng, mask_prob=0.0)
    with pytest.raises(ValueError, match="no ordinary token"):
        mask_tokens(np.array([[2, 3]]), 5, rng)


def test_truncate_pair_cuts_the_longer_side():
    a, b = truncate_pair(np.arange(10), np.arange(4), 8)
    assert (a.size, b.size) == (4, 4)
    a, b = truncate_pair(np.arange(3), np.arange(3), 8)
    assert (a.size, b.size) == (3, 3)


def test_pairs_layout_and_nsp_negatives_from_another_document(data):
    rng = np.random.default_rng(1)
    for anchor in range(data.n_examples("train")):
        doc, k = data.anchors["train"][anchor]
        for is_next in (True, False):
            ids, seg, label = data.pair("train", anchor, is_next, rng)
            assert ids[0] == CLS_ID and ids[-1] == SEP_ID and (ids == SEP_ID).sum() == 2
            assert ids.size <= data.max_len
            first_sep = int(np.flatnonzero(ids == SEP_ID)[0])
            assert (seg[:first_sep + 1] == 0).all() and (seg[first_sep + 1:] == 1).all()
            b = data.tokenizer.decode(ids[first_sep + 1:-1])
            own = data.tokenizer.decode(data.sentence("train", doc, k + 1))
            name = data.tokenizer.decode(data.sentence("train", doc, k)).split()[0]
            if is_next:
                assert label == IS_NEXT and own.startswith(b)
            else:
                assert label == NOT_NEXT and not b.startswith(name + " ")   # another document's sentence


def test_nsp_balance_over_many_batches(data):
    task = BertPretrainingTask(data, nsp=True, seed=3)
    rng = np.random.default_rng(0)
    labels = np.concatenate([task.batch("train", 32, rng)[3] for _ in range(60)])
    assert abs(labels.mean() - 0.5) < 0.05
    # the 50/50 choice belongs to the example: every draw of an anchor gets the same label
    seen = {}
    for a in range(data.n_examples("train")):
        seen[a] = {task.example("train", a)[2] for _ in range(3)}
    assert all(len(v) == 1 for v in seen.values())


def test_static_masks_repeat_and_dynamic_ones_do_not(data):
    def masks(masking, draws=40):
        task = BertPretrainingTask(data, nsp=True, masking=masking, seed=3)
        out, rng = {}, np.random.default_rng(5)
        for _ in range(draws):
            tokens, _, targets, _ = task.batch("train", 8, rng)
            for row, tgt in zip(tokens, targets):
                key = tuple(np.where(tgt != IGNORE_INDEX, tgt, row))   # the unmasked example
                out.setdefault(key, set()).add(tuple(tgt))
        return [v for v in out.values()]
    static, dynamic = masks("static"), masks("dynamic")
    assert all(len(v) == 1 for v in static)
    assert sum(len(v) > 1 for v in dynamic) > 5


def test_batches_and_validation_split(data):
    task = BertPretrainingTask(data, nsp=False, seed=3)
    tokens, segments, targets = task.batch("val", 6, np.random.default_rng(0))
    assert tokens.shape == segments.shape == targets.shape and tokens.shape[1] <= data.max_len
    assert (segments == 0).all()                                   # RoBERTa: one segment
    assert task.counted((tokens, segments, targets)) == int((targets != IGNORE_INDEX).sum())
    assert set(data.docs) == {"train", "val"} and len(data.docs["val"]) == 3   # every tenth document
    with pytest.raises(ValueError, match="no 'test' split"):
        task.batch("test", 2, np.random.default_rng(0))


def test_labelled_tasks(data):
    module = make_finetune_task("module", data, 1.0)
    assert sorted(module.class_names) == ["mod0", "mod1", "mod2", "mod3"] and module.n_classes == 4
    counts = np.bincount([e[2] for e in module.train_examples])
    assert (counts == counts[0]).all()                             # balanced
    few = make_finetune_task("module", data, 0.1)
    assert len(few.train_examples) == 4 * max(1, round(0.1 * counts[0]))
    pair = make_finetune_task("adjacent", data, 1.0)
    labels = np.array([e[2] for e in pair.train_examples])
    assert 0.3 < labels.mean() < 0.7
    tokens, segments, y = pair.batch("train", 5, np.random.default_rng(0))
    assert tokens.shape == segments.shape and y.shape == (5,) and segments.max() == 1
    with pytest.raises(ValueError, match="unknown fine-tuning task 'nope'"):
        make_finetune_task("nope", data)
    with pytest.raises(ValueError, match="label_fraction"):
        make_finetune_task("module", data, 0.0)


def test_keep_fraction_keeps_every_class():
    examples = [(None, None, c) for c in (0,) * 50 + (1,) * 3]
    kept = keep_fraction(examples, 0.01, 2, seed=0)
    assert sorted(e[2] for e in kept) == [0, 1]
