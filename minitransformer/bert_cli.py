"""`minitransformer fill-mask` and `minitransformer finetune`: using a pretrained BERT checkpoint.

    minitransformer train --model bert --preset tiny --out runs/bert-tiny
    minitransformer fill-mask --checkpoint runs/bert-tiny --text "return the [MASK] of the file."
    minitransformer finetune --checkpoint runs/bert-tiny                  # task "module", all labels
    minitransformer finetune --checkpoint runs/bert-tiny --task adjacent --labels 0.1

`fill-mask` prints, for every ``[MASK]`` of the text, the most likely tokens with their
probabilities. `finetune` puts a fresh classification head on the checkpoint's encoder, trains it
on a labelled task made from the built-in corpus (see ``tasks/finetune_tasks.py``), prints the
accuracy on the held-out examples and the masked-LM loss before and after (what fine-tuning
forgot), and saves the classifier (kind ``bert-classifier``) in --out.
"""
from __future__ import annotations

import argparse

DEFAULT_FINETUNE = dict(steps=300, batch_size=32, lr=3e-4)


def add_parsers(subparsers) -> None:
    """Add `fill-mask` and `finetune` to an argparse subparsers object."""
    _add_fill_mask(subparsers)
    _add_finetune(subparsers)


def _add_fill_mask(sub):
    p = sub.add_parser("fill-mask", help="predict the [MASK] tokens of a text with a pretrained BERT",
                       description="Top-k predictions with probabilities for every [MASK] in --text, from a "
                                   "checkpoint of `minitransformer train --model bert`.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="run directory or .safetensors file")
    p.add_argument("--text", required=True, help='text with at least one [MASK], e.g. "open the [MASK] ."')
    p.add_argument("--top-k", type=int, default=5, help="predictions shown per [MASK]")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    p.set_defaults(func=run_fill_mask)


def _add_finetune(sub):
    from .tasks.finetune_tasks import TASKS
    p = sub.add_parser("finetune", help="fine-tune a pretrained BERT on a labelled task; print held-out accuracy",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="tasks:\n" + "\n".join(f"  {k:9s} {v}" for k, v in TASKS.items()))
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a `train --model bert` run directory "
                   "or .safetensors file")
    p.add_argument("--task", default="module", help="labelled task (default: %(default)s)")
    p.add_argument("--labels", type=float, default=1.0, help="fraction of the training labels used, in (0, 1] "
                   "(default: %(default)s)")
    p.add_argument("--steps", type=int, default=DEFAULT_FINETUNE["steps"], help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_FINETUNE["batch_size"], help="default: %(default)s")
    p.add_argument("--lr", type=float, default=DEFAULT_FINETUNE["lr"], help="peak learning rate; low, so as not "
                   "to forget the pretraining (default: %(default)s)")
    p.add_argument("--data", metavar="FILE", help="documents for the 'adjacent' task: a text file, blank lines "
                   "between documents (default: the built-in corpus, which 'module' needs)")
    p.add_argument("--from-scratch", action="store_true", help="same architecture, fresh weights (the baseline)")
    p.add_argument("--seed", type=int, default=0, help="head initialisation, label subset and batches")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: %(default)s")
    p.add_argument("--out", metavar="DIR", help="where the fine-tuned classifier goes (default: runs/bert-finetune-TASK)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_finetune)


def mask_predictions(model, ids, top_k: int):
    """[(position, [(token id, probability), ...]), ...] for every [MASK] of the 1-D `ids`."""
    import numpy as np  # host side only: the one input row

    from . import backend
    from .data.wordpiece import MASK_ID
    from .nn.functional.softmax import softmax_forward

    tokens = backend.to_device(np.asarray(ids, np.int64)[None], model.device)   # (1, T)
    logits, _ = model.predict(tokens)                                        # (1, T, V)
    probs = backend.to_numpy(softmax_forward(logits[0])[0])                  # (T, V)
    out = []
    for t in np.flatnonzero(np.asarray(ids) == MASK_ID):
        best = np.argsort(-probs[t])[:top_k]
        out.append((int(t), [(int(i), float(probs[t, i])) for i in best]))
    return out


def run_fill_mask(args) -> int:
    import numpy as np  # host side only: token ids

    from . import backend
    from .data.wordpiece import CLS_ID, SEP_ID
    from .transfer import load_pretrained_bert

    if args.top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {args.top_k}")
    backend.check_device(args.device)
    if "[MASK]" not in args.text:
        raise ValueError(f"--text has no [MASK] to fill: {args.text!r}; write [MASK] where a word should be predicted")
    model, tokenizer = load_pretrained_bert(args.checkpoint, args.device)
    ids = tokenizer.encode(args.text)                  # "[MASK]" is kept whole: one MASK_ID each
    ids = np.concatenate([[CLS_ID], ids, [SEP_ID]])
    if ids.size > model.config.max_len:
        raise ValueError(f"--text is {ids.size} tokens with [CLS] and [SEP], more than the model's "
                         f"max_len={model.config.max_len}; shorten it")
    k = min(args.top_k, tokenizer.vocab_size)
    for position, best in mask_predictions(model, ids, k):
        print(f"[MASK] at token {position}:")
        for token, p in best:
            print(f"  {tokenizer.itos[token]:<16s} {p:.4f}")
    return 0


def run_finetune(args) -> int:
    from pathlib import Path

    from . import backend
    from .data.sentence_pairs import SentenceData
    from .tasks.bert_pretraining import BertPretrainingTask, load_documents
    from .tasks.finetune_tasks import TASKS, make_finetune_task
    from .train import TrainConfig
    from .transfer import (classifier_from_pretrained, finetune, load_pretrained_bert,
                           mlm_loss_after_finetuning)

    if args.task not in TASKS:
        raise ValueError(f"unknown fine-tuning task {args.task!r}; known: {sorted(TASKS)}")
    if not 0 < args.labels <= 1:
        raise ValueError(f"--labels must lie in (0, 1] (a fraction of the training labels), got {args.labels}")
    if args.data and args.task == "module":
        raise ValueError("the 'module' task labels sentences by the standard-library module they come from: it "
                         "needs the built-in corpus (drop --data, or use --task adjacent)")
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.lr / 10,
                      warmup=max(1, args.steps // 10), weight_decay=0.01, eval_interval=max(1, args.steps // 3),
                      eval_iters=4, seed=args.seed, threads=1, num_samples=0)   # checks every number
    backend.check_device(args.device)
    pretrained, tokenizer = load_pretrained_bert(args.checkpoint, args.device)
    source = args.data or "the built-in corpus"
    print(f"reading {source} with the checkpoint's WordPiece vocabulary ({tokenizer.vocab_size} tokens)")
    docs = load_documents(args.data)
    data = SentenceData(docs, tokenizer, pretrained.config.max_len)
    task = make_finetune_task(args.task, data, args.labels, seed=args.seed)
    start = "fresh weights (from scratch)" if args.from_scratch else f"the encoder of {args.checkpoint}"
    print(f"{task.describe()}\nstarting from {start}")
    model = classifier_from_pretrained(None if args.from_scratch else pretrained, pretrained.config,
                                       task.n_classes, seed=args.seed, device=args.device)
    out = Path(args.out or f"runs/bert-finetune-{args.task}")
    result = finetune(model, task, cfg, out, progress=not args.no_progress, log=print, overwrite=args.overwrite)
    accuracy = result["history"][-1]["accuracy"]                 # fit validates at the last step
    print(f"\nheld-out accuracy {accuracy:.4f} on {len(task.val_examples)} examples "
          f"(chance {1 / task.n_classes:.4f}); classifier saved in {out}")
    if not args.from_scratch:
        c = pretrained.config
        mlm_task = BertPretrainingTask(data, nsp=c.nsp, masking=c.masking, seed=args.seed)
        before = mlm_task.metrics(pretrained)["mlm_loss"]
        after = mlm_loss_after_finetuning(pretrained, result["model"], mlm_task)
        print(f"masked-LM validation loss of the encoder: {before:.4f} before fine-tuning, {after:.4f} after")
    return 0
