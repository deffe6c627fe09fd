"""The training loop: batches, forward, hand-written backward, clipping, AdamW, schedule,
periodic validation, atomic checkpoints, resume, metrics (JSON lines) and samples at the end.

A non-finite loss or gradient stops training with TrainingDiverged; checkpoints are only written
after a finite validation, so the last good one is left intact.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np  # host-side data and RNG only
from tqdm.auto import tqdm

from . import backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data.batching import get_batch, train_val_split
from .data.tokenizer import CharTokenizer
from .optim import OPTIMIZERS, clip_grad_norm, noam, warmup_cosine


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000               # optimizer steps in total
    batch_size: int = 12            # B: sequences per micro-batch
    grad_accum: int = 1             # micro-batches whose gradients are summed per step
    optimizer: str = "adamw"        # "adamw", "adam" or "sgd"
    lr: float = 1e-3                # peak learning rate
    min_lr: float = 1e-4            # final learning rate of the cosine schedule
    schedule: str = "cosine"        # "cosine" (warm-up + cosine), "noam" or "constant"
    warmup: int = 100               # warm-up steps
    weight_decay: float = 0.1       # AdamW decoupled decay (matrices only)
    beta1: float = 0.9              # Adam beta_1 (SGD: momentum)
    beta2: float = 0.99             # Adam beta_2
    grad_clip: float = 1.0          # global gradient-norm clip (0: off)
    eval_interval: int = 250        # validate (and checkpoint) every this many steps
    eval_iters: int = 20            # batches per validation estimate
    val_fraction: float = 0.1       # the last fraction of the text is the validation split
    seed: int = 1337                # weights, batches and dropout
    dtype: str = "float32"          # float32 or float64
    workers: int = 1                # data-parallel worker processes (CPU); the batch is split among them
    threads: int = 0                # CPU threads the batch is split over (0: auto, see thread_parallel; 1: off)
    sample_tokens: int = 300        # characters generated per sample at the end
    num_samples: int = 2            # samples printed at the end
    temperature: float = 0.8        # sampling temperature for the samples
    top_k: int = 40                 # top-k for the samples (0: off)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("TrainConfig: steps, batch_size and grad_accum must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer: unknown {self.optimizer!r}; known: {sorted(OPTIMIZERS)}")
        if self.schedule not in ("cosine", "noam", "constant"):
            raise ValueError(f"TrainConfig.schedule must be cosine, noam or constant, got {self.schedule!r}")
        if self.workers < 1 or self.batch_size % self.workers:
            raise ValueError(f"TrainConfig: workers={self.workers} must be >= 1 and divide batch_size={self.batch_size}")
        if self.threads < 0:
            raise ValueError(f"TrainConfig: threads must be >= 0 (0: one per core), got {self.threads}")
        if self.workers > 1 and self.threads > 1:
            raise ValueError(f"TrainConfig: choose worker processes (workers={self.workers}) or threads "
                             f"(threads={self.threads}), not both")
        if self.eval_interval < 1 or self.eval_iters < 1:
            raise ValueError("TrainConfig: eval_interval and eval_iters must be >= 1")


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


def learning_rate(step: int, cfg: TrainConfig, d_model: int) -> float:
    """The learning rate of `step` under cfg.schedule; "noam" is scaled so that its peak is cfg.lr."""
    if cfg.schedule == "cosine":
        return warmup_cosine(step, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps)
    if cfg.schedule == "noam":
        warmup = max(cfg.warmup, 1)
        peak = noam(warmup - 1, d_model, warmup)              # the unscaled schedule's maximum
        return noam(step, d_model, warmup, factor=cfg.lr / peak)
    return cfg.lr


def make_optimizer(model, cfg: TrainConfig):
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return OPTIMIZERS["sgd"](params, lr=cfg.lr, momentum=cfg.beta1, weight_decay=0.0)
    if cfg.optimizer == "adam":
        return OPTIMIZERS["adam"](params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return OPTIMIZERS["adamw"](params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def estimate_loss(model, ids, cfg: TrainConfig, seed: int, device: str) -> float:
    """Mean loss over cfg.eval_iters random batches drawn with their own generator (model in eval)."""
    rng = np.random.default_rng(seed)
    block = model.config.block_size
    was_training = model.training
    model.eval()
    losses = []
    with model.no_grad():
        for _ in range(cfg.eval_iters):
            x, y = get_batch(ids, cfg.batch_size, block, rng)
            _, loss = model.forward(backend.to_device(x, device), backend.to_device(y, device))
            losses.append(float(loss))
    model.train(was_training)
    return float(np.mean(losses))


def unigram_baseline(train_ids, val_ids, vocab_size: int) -> float:
    """Cross-entropy of predicting each validation token from training-set character frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[val_ids].mean())


def _check_finite(value: float, what: str, step: int, out_dir: Path | None) -> None:
    if not math.isfinite(value):
        where = f" The last good checkpoint in {out_dir} is intact." if out_dir else ""
        raise TrainingDiverged(f"{what} became {value} at step {step}; stopping.{where} "
                               "Try a lower learning rate or stronger gradient clipping.")


def build_model(model_cfg, train_cfg: TrainConfig, device: str):
    from .models.gpt import GPT
    return GPT(model_cfg, seed=train_cfg.seed).to(device, train_cfg.dtype)


def _replica(model_cfg, train_cfg: TrainConfig):
    """A CPU copy of the model for a data-parallel worker (its weights are replaced every step)."""
    return build_model(model_cfg, train_cfg, "cpu")


def _data_parallel(model, model_cfg, train_cfg: TrainConfig, device: str):
    """What splits each batch: worker processes (cfg.workers > 1), threads (on the CPU, cfg.threads,
    0 meaning `thread_parallel.auto_threads`), or nothing (None)."""
    if train_cfg.workers > 1:
        if device != "cpu":
            raise ValueError("data-parallel workers run on the CPU; use workers = 1 with --device cuda")
        from .parallel import DataParallel
        return DataParallel(model, partial(_replica, model_cfg, train_cfg), train_cfg.workers)
    if device != "cpu":
        return None
    from .thread_parallel import ThreadParallel, auto_threads
    threads = min(train_cfg.threads or auto_threads(train_cfg.batch_size, model_cfg.block_size, model_cfg.d_model),
                  train_cfg.batch_size)
    return ThreadParallel(model, threads) if threads > 1 else None


def _resume_state(out_dir: Path | None, model_cfg):
    """(tokenizer, model state, optimizer state, meta) of the checkpoint in out_dir, after checking
    that it was written for this model configuration."""
    if out_dir is None:
        raise ValueError("resume needs an output directory holding a checkpoint")
    state, opt_state, meta = load_checkpoint(out_dir)
    tokenizer = CharTokenizer.from_dict(meta["tokenizer"])
    if meta["model_config"] != replace(model_cfg, vocab_size=tokenizer.vocab_size).to_dict():
        raise CheckpointError(f"checkpoint in {out_dir} was written for another model configuration: "
                              f"{meta['model_config']} (asked for {model_cfg.to_dict()})")
    return tokenizer, state, opt_state, meta


def _forward_backward(model, parallel, x, y, device: str, dloss: float) -> float:
    """The loss of one micro-batch; its gradient (scaled by dloss) is added into Parameter.grad."""
    if parallel is not None:
        return parallel.forward_backward(x, y, dloss=dloss)      # split over processes or threads
    _, loss = model.forward(backend.to_device(x, device), backend.to_device(y, device))
    model.backward(dloss=dloss)
    return float(loss)


def _samples(model, tokenizer: CharTokenizer, cfg: TrainConfig, device: str) -> list[str]:
    """cfg.num_samples texts of cfg.sample_tokens characters, each started from a newline."""
    from .generate import generate
    if not (cfg.num_samples and cfg.sample_tokens):
        return []
    prompt = backend.to_device(np.array([[tokenizer.stoi.get("\n", 0)]] * cfg.num_samples), device)
    out = generate(model, prompt, cfg.sample_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                   seed=cfg.seed)
    return [tokenizer.decode(backend.to_numpy(row)[1:]) for row in out]


# --8<-- [start:train]
def train(model_cfg, train_cfg: TrainConfig, text: str, out_dir=None, device: str = "cpu",
          resume: bool = False, progress: bool = True, log=print, stop_after: int | None = None) -> dict:
    """Train a GPT on `text`; return a summary (losses, samples, throughput).

    stop_after: end this run after that many steps in total (as if interrupted), keeping the
    schedule of the full `train_cfg.steps`; a later `resume=True` call continues it.
    """
    backend.check_device(device)
    backend.tune_host_allocator()
    out_dir = Path(out_dir) if out_dir else None
    if resume:
        tokenizer, state, opt_state, meta = _resume_state(out_dir, model_cfg)
    else:
        tokenizer = CharTokenizer.from_text(text)
    model_cfg = replace(model_cfg, vocab_size=tokenizer.vocab_size)
    train_ids, val_ids = train_val_split(tokenizer.encode(text), train_cfg.val_fraction)
    for name, part in (("training", train_ids), ("validation", val_ids)):
        if len(part) <= model_cfg.block_size:
            raise ValueError(f"the {name} split has {len(part)} tokens, fewer than block_size + 1 = "
                             f"{model_cfg.block_size + 1}; use a longer text or a smaller block_size")

    model = build_model(model_cfg, train_cfg, device)
    optimizer = make_optimizer(model, train_cfg)
    rng = np.random.default_rng(train_cfg.seed)                 # draws the training batches
    start_step = 0
    if resume:
        model.load_state_dict(state)
        optimizer.load_state_arrays(opt_state)
        start_step = optimizer.t = meta["step"]
        rng.bit_generator.state = meta["rng"]
    baseline = unigram_baseline(train_ids, val_ids, tokenizer.vocab_size)
    log(f"model: {model.num_parameters():,} parameters | vocab {tokenizer.vocab_size} | "
        f"train {len(train_ids):,} / val {len(val_ids):,} tokens | unigram baseline {baseline:.3f}")

    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    metrics = (out_dir / "metrics.jsonl").open("a") if out_dir else None
    parallel = _data_parallel(model, model_cfg, train_cfg, device)
    if parallel is not None:
        log(f"each batch is split over {parallel}")
    history = []
    tokens_per_step = train_cfg.batch_size * train_cfg.grad_accum * model_cfg.block_size
    bar = tqdm(range(start_step, train_cfg.steps), initial=start_step, total=train_cfg.steps,
               disable=not progress, desc="train", dynamic_ncols=True, mininterval=0.5)
    t_last, step_loss = time.perf_counter(), float("nan")
    try:
        for step in bar:
            optimizer.lr = learning_rate(step, train_cfg, model_cfg.d_model)
            step_loss = 0.0
            for _ in range(train_cfg.grad_accum):                  # gradients add up over micro-batches
                x, y = get_batch(train_ids, train_cfg.batch_size, model_cfg.block_size, rng)
                loss = _forward_backward(model, parallel, x, y, device, dloss=1.0 / train_cfg.grad_accum)
                _check_finite(loss, "the training loss", step, out_dir)
                step_loss += loss / train_cfg.grad_accum
            grad_norm = clip_grad_norm(model.parameters(), train_cfg.grad_clip)
            _check_finite(grad_norm, "the gradient norm", step, out_dir)
            optimizer.step()
            optimizer.zero_grad()
            now = time.perf_counter()
            tok_s = tokens_per_step / max(now - t_last, 1e-9)
            t_last = now
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)

            if (step + 1) % train_cfg.eval_interval == 0 or step + 1 == train_cfg.steps:
                val = estimate_loss(model, val_ids, train_cfg, seed=step, device=device)
                trn = estimate_loss(model, train_ids, train_cfg, seed=step + 1, device=device)
                _check_finite(val, "the validation loss", step, out_dir)
                row = {"step": step + 1, "train_loss": trn, "val_loss": val, "batch_loss": step_loss,
                       "lr": optimizer.lr, "grad_norm": grad_norm, "tokens_per_s": tok_s}
                history.append(row)
                bar.write(f"step {step + 1:5d} | train {trn:.4f} | val {val:.4f} | lr {optimizer.lr:.2e}")
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                if out_dir:                                        # only after a finite validation
                    meta = {"model_config": model_cfg.to_dict(), "train_config": asdict(train_cfg),
                            "tokenizer": tokenizer.to_dict(), "step": step + 1,
                            "rng": rng.bit_generator.state, "val_loss": val}
                    save_checkpoint(out_dir, model.state_dict(), meta, optimizer.state_arrays())
            t_last = time.perf_counter()   # do not charge validation to the next step's throughput
            if stop_after is not None and step + 1 >= stop_after:
                break
    finally:
        bar.close()
        if metrics:
            metrics.close()
        if parallel is not None:
            parallel.close()
    return {"history": history, "samples": _samples(model, tokenizer, train_cfg, device),
            "unigram_baseline": baseline, "model": model, "tokenizer": tokenizer,
            "final_batch_loss": step_loss}
# --8<-- [end:train]
