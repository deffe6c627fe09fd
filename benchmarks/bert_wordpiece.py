"""WordPiece on the built-in corpus: what the merge threshold `min_frequency` does to a small vocabulary.

For V = 1000 and V = 2000, trains the vocabulary on the training documents with min_frequency 1
(the plain score) and with the pretraining task's default (about n_words / 2V), and reports the
tokens per sentence, the share of words encoded as one token, the last merges, the training time
and the unigram masked-LM baseline of the pretraining task (the cross-entropy of predicting each
held-out token from the training frequencies).

Writes docs/benchmarks/bert_wordpiece.{json,md}. Usage: python benchmarks/bert_wordpiece.py
"""
from __future__ import annotations

import argparse
import json
import time

from _blas_threads import THREADS  # noqa: F401  pins BLAS threads before numpy loads

import numpy as np  # noqa: E402

from _bert_common import add_common_options  # noqa: E402
from minitransformer.data.sentence_pairs import SentenceData, documents_text  # noqa: E402
from minitransformer.data.wordpiece import WordPieceTokenizer, pre_tokenize  # noqa: E402
from minitransformer.tasks.bert_pretraining import (BertPretrainingTask, default_min_frequency,  # noqa: E402
                                                    load_documents)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_options(p)
    args = p.parse_args(argv)
    docs = load_documents()
    text = documents_text(docs, "train")
    words = pre_tokenize(text, lowercase=True)
    rows = []
    for V in (1000, 2000):
        for m in (1, default_min_frequency(len(text.split()), V)):
            t0 = time.perf_counter()
            tok = WordPieceTokenizer.train(text, V, lowercase=True, min_frequency=m)
            seconds = time.perf_counter() - t0
            data = SentenceData(docs, tok, max_len=10_000)
            lengths = [s.size for _, sents in data.docs["val"] for s in sents]
            sample = words[::50]
            whole = np.mean([len(tok.encode_word(w)) == 1 for w in sample])
            baseline = BertPretrainingTask(data, nsp=False).baseline()
            rows.append({"vocab_size": V, "min_frequency": m, "tokens": tok.vocab_size,
                         "tokens_per_sentence": float(np.mean(lengths)), "whole_words": float(whole),
                         "unigram_mlm_baseline": baseline, "seconds": seconds, "last_merges": tok.itos[-5:]})
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "train_characters": len(text), "train_words": len(text.split())}
    (args.out / "bert_wordpiece.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "bert_wordpiece.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r) -> str:
    lines = [f"WordPiece (lowercase) trained on the training documents of the built-in corpus "
             f"({r['train_characters']:,} characters, {r['train_words']:,} words); lengths over the held-out sentences.",
             "", "| V | min_frequency | tokens per sentence | words as one token | unigram MLM baseline (nats) "
             "| training time | last merges |", "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for x in r["rows"]:
        merges = ", ".join(f"`{m}`" for m in x["last_merges"])
        lines.append(f"| {x['vocab_size']} | {x['min_frequency']} | {x['tokens_per_sentence']:.1f} | "
                     f"{x['whole_words']:.0%} | {x['unigram_mlm_baseline']:.3f} | {x['seconds']:.2f} s | {merges} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
