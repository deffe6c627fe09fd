"""What the BERT benchmarks share: the tiny model, pretraining, fine-tuning and the common MLM
evaluation. Every run goes through the package's one training loop (`train.fit`)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from minitransformer.data.sentence_pairs import SentenceData, documents_text  # noqa: E402
from minitransformer.models.bert import BertConfig, BertModel  # noqa: E402
from minitransformer.tasks.bert_pretraining import (BertPretrainingTask, load_documents, mlm_loss,  # noqa: E402
                                                    train_tokenizer)
from minitransformer.tasks.finetune_tasks import make_finetune_task  # noqa: E402
from minitransformer.train import TrainConfig, fit  # noqa: E402
from minitransformer.transfer import classifier_from_pretrained, finetune  # noqa: E402

BENCH, FIGS = ROOT / "docs" / "benchmarks", ROOT / "docs" / "figures"
# the tiny BERT of both benchmarks: C=64, L=2, H=2, T_max=48, V=1000 (2 shared CPU cores)
TINY = BertConfig(vocab_size=1000, max_len=48, n_layer=2, n_head=2, d_model=64, dropout=0.1)


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=BENCH, help="directory for the tables (default: docs/benchmarks)")
    p.add_argument("--figures", type=Path, default=FIGS, help="directory for the figures (default: docs/figures)")
    p.add_argument("--threads", default="1", help="BLAS threads (default 1)")


def corpus_data(config: BertConfig = TINY):
    """(documents, SentenceData) of the built-in corpus with a WordPiece vocabulary of config.vocab_size."""
    docs = load_documents()
    tokenizer = train_tokenizer(documents_text(docs, "train"), config.vocab_size)
    return docs, SentenceData(docs, tokenizer, config.max_len)


def pretrain_config(steps: int, lr: float = 3e-3, batch_size: int = 32, seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10, warmup=max(1, steps // 20),
                       weight_decay=0.01, eval_interval=max(1, steps // 4), eval_iters=4, seed=seed,
                       threads=1, num_samples=0)


def pretrain(config: BertConfig, data: SentenceData, steps: int, seed: int = 0, lr: float = 3e-3):
    """(model, task, seconds, history): `config` pretrained for `steps` on `data`."""
    task = BertPretrainingTask(data, nsp=config.nsp, masking=config.masking, seed=seed)
    model = BertModel(task.adapt(config), seed=seed)
    t0 = time.perf_counter()
    result = fit(model, task, pretrain_config(steps, lr, seed=seed), progress=False, log=lambda *a: None)
    return model, task, time.perf_counter() - t0, result["history"]


def common_mlm_loss(model, data: SentenceData) -> float:
    """MLM loss on the same fixed validation batches for every model: sentence pairs with static
    masks (segments all 0 for a model pretrained without NSP, which never saw segment 1)."""
    task = BertPretrainingTask(data, nsp=True, masking="static", seed=0)
    losses = []
    for tokens, segments, targets, _ in task.val_batches_fixed():
        losses.append(mlm_loss(model, tokens, segments if model.config.nsp else np.zeros_like(segments), targets))
    return float(np.mean(losses))


def finetune_config(steps: int, lr: float, seed: int, batch_size: int = 32) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=batch_size, lr=lr, min_lr=lr / 10, warmup=max(1, steps // 10),
                       weight_decay=0.01, eval_interval=steps, eval_iters=2, seed=seed, threads=1, num_samples=0)


def finetune_accuracy(pretrained, config, data, task_name: str, fraction: float, lr: float, steps: int,
                      seed: int = 0):
    """(held-out accuracy, fine-tuned classifier, seconds)."""
    task = make_finetune_task(task_name, data, fraction, seed=seed)
    model = classifier_from_pretrained(pretrained, config, task.n_classes, seed=seed + 100)
    t0 = time.perf_counter()
    result = finetune(model, task, finetune_config(steps, lr, seed))
    return result["history"][-1]["accuracy"], model, time.perf_counter() - t0
