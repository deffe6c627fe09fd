"""The one training loop: any registered model, any task.

``fit(model, task, cfg)`` owns everything a run needs: batching (through the task), the learning-rate
schedule, gradient accumulation and clipping, splitting a batch over threads or over the MPI ranks
that ``mpiexec`` started (``distributed/``: rank 0 logs and writes the checkpoints, every rank
resumes from them), ZeRO-1 and activation checkpointing,
periodic validation, the progress bar, metrics (JSON lines), checkpoints (last and best) and
resume, NaN handling and Ctrl-C. Causal language modelling, seq2seq, classification, masked LM and
distillation are tasks (``tasks/``), not loops; fine-tuning a compressed model is a call of `fit`.

Failures keep what was good: a non-finite loss stops the run with TrainingDiverged and leaves the
checkpoints as they were; a checkpoint is written only after a finite validation; ``best`` is only
replaced by a lower validation loss; Ctrl-C finishes the current step, saves the last checkpoint
and says how to resume.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np  # host-side batches, RNG and metrics only
from tqdm.auto import tqdm

from . import backend
from .checkpoint import (BEST, LAST, CheckpointError, checkpoint_file, clean_run_dir, holds_run, load_checkpoint,
                         remove_run, save_checkpoint)
from .config import require_int, require_number
from .distributed import DistributedError, ZeroAdamW, world
from .distributed.recompute import checkpoint_blocks
from .nn.checks import values_checked_on_host
from .optim import OPTIMIZERS, clip_grad_norm, decay_groups, noam, warmup_cosine
from .thread_parallel import available_cores

SCHEDULES = ("cosine", "noam", "constant")
TRAIN_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000               # optimizer steps in total (on resume too: the run ends at step `steps`)
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
    threads: int = 0                # CPU threads the batch is split over (0: auto, see thread_parallel; 1: off)
    sample_tokens: int = 300        # characters generated per sample at the end (0: none)
    num_samples: int = 2            # samples printed at the end (0: none)
    temperature: float = 0.8        # sampling temperature for the samples
    top_k: int = 40                 # top-k for the samples (0: off)
    zero_stage: int = 0             # 1: shard AdamW's moments over the MPI ranks (ZeRO-1); 0: off
    checkpoint_activations: bool = False   # recompute each block's forward in its backward (less memory)

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_interval", "eval_iters"):
            require_int(self, name, 1)
        for name in ("warmup", "threads", "sample_tokens", "num_samples", "top_k", "seed"):
            require_int(self, name, 0)
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            require_number(self, name, 0)
        for name in ("beta1", "beta2"):
            require_number(self, name, 0, 1, high_open=True)
        require_number(self, "val_fraction", 0, 1, low_open=True, high_open=True)
        require_number(self, "temperature", 0, low_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer: unknown {self.optimizer!r}; known: {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype == "float16":
            raise ValueError("TrainConfig.dtype: float16 training is not supported: its gradients underflow "
                             "without loss scaling and its updates vanish without float32 master weights, "
                             "neither of which this trainer implements; train in float32 (then compress "
                             "with `minitransformer compress --method fp16` to ship float16 weights)")
        if self.dtype not in TRAIN_DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {list(TRAIN_DTYPES)}, got {self.dtype!r}")
        if self.zero_stage not in (0, 1):
            raise ValueError(f"TrainConfig.zero_stage must be 0 (off) or 1 (optimizer-state sharding), "
                             f"got {self.zero_stage!r}")
        if self.zero_stage and self.optimizer == "sgd":
            raise ValueError("TrainConfig: zero_stage=1 shards AdamW's moments; it needs optimizer "
                             "\"adamw\" or \"adam\", not \"sgd\"")
        if not isinstance(self.checkpoint_activations, bool):
            raise ValueError(f"TrainConfig.checkpoint_activations must be true or false, got "
                             f"{self.checkpoint_activations!r}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class RunExists(ValueError):
    """The output directory already holds a run, and neither resume nor overwrite was asked for."""


def learning_rate(step: int, cfg: TrainConfig, d_model: int = 512) -> float:
    """The learning rate of `step` under cfg.schedule; "noam" is scaled so that its peak is cfg.lr."""
    if cfg.schedule == "cosine":
        return warmup_cosine(step, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps)
    if cfg.schedule == "noam":
        warmup = max(cfg.warmup, 1)
        peak = noam(warmup - 1, d_model, warmup)              # the unscaled schedule's maximum
        return noam(step, d_model, warmup, factor=cfg.lr / peak)
    return cfg.lr


def make_optimizer(model, cfg: TrainConfig):
    """The optimizer of cfg over the trainable parameters; AdamW decays the matrices only (biases,
    LayerNorm gains and other vectors form a group without decay)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return OPTIMIZERS["sgd"](params, lr=cfg.lr, momentum=cfg.beta1, weight_decay=0.0)
    if cfg.optimizer == "adam":
        return OPTIMIZERS["adam"](params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return OPTIMIZERS["adamw"](decay_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr,
                               betas=(cfg.beta1, cfg.beta2))


def evaluate(model, task, split: str, batch_size: int, iters: int, seed: int) -> float:
    """Mean task loss over `iters` batches of `split` drawn with their own generator (model in eval)."""
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    try:
        with model.no_grad():
            losses = [task.loss(model, task.batch(split, batch_size, rng)) for _ in range(iters)]
    finally:
        model.train(was_training)
    return float(np.mean(losses))


def _data_parallel(model, task, cfg: TrainConfig, positions: int, comm):
    """What splits each batch: the MPI ranks (more than one), threads (on the CPU, cfg.threads,
    0 meaning `thread_parallel.auto_threads`), or nothing (None). `positions`: per sequence."""
    if not getattr(task, "splittable", True):                  # its rows carry state (a memory)
        if comm.size > 1 or cfg.threads > 1:
            raise ValueError(f"task {task.name!r} keeps state along each batch row (a memory across "
                             "segments) and cannot split its batches: run one process (no mpiexec) "
                             "with threads <= 1")
        return None
    if comm.size > 1:
        from .distributed import DistributedDataParallel
        return DistributedDataParallel(model, comm, task)
    if model.device != "cpu":
        return None
    from .thread_parallel import ThreadParallel, auto_threads
    width = getattr(model.config, "d_model", 1)
    threads = min(cfg.threads or auto_threads(cfg.batch_size, positions, width), cfg.batch_size)
    return ThreadParallel(model, threads, task) if threads > 1 else None


class _StopRequest:
    """Ctrl-C during `fit`: the first one is remembered and honoured between steps (so no optimizer
    step is left half done); a second one interrupts at once."""

    def __init__(self):
        self.requested, self._previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check_finite(value: float, what: str, step: int, out_dir: Path | None) -> None:
    """Raise TrainingDiverged naming the step (1-based, as the progress lines count) and, only if
    one exists, the checkpoint that is left."""
    if math.isfinite(value):
        return
    kept = ""
    if out_dir is not None and (out_dir / LAST).is_file():
        kept = f" The checkpoints in {out_dir} are from before it and intact (resume with --resume)."
    elif out_dir is not None:
        kept = " No checkpoint had been written yet."
    raise TrainingDiverged(f"{what} became {value} at step {step}; stopping.{kept} "
                           "Try a lower learning rate, a longer warm-up or stronger gradient clipping.")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only the metrics rows of steps <= `step` (a resumed run writes the later ones again)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for line in rows:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue                                       # a line cut short by a kill
    path.write_text("".join(row + "\n" for row in kept))


def _prepare_out_dir(out_dir: Path | None, resume: bool, overwrite: bool, log) -> None:
    if out_dir is None:
        if resume:
            raise ValueError("resume needs an output directory holding a checkpoint")
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output directory {str(out_dir)!r}: {err.strerror}") from None
    stale = clean_run_dir(out_dir)
    if stale:
        log(f"removed {len(stale)} temporary file(s) left by an interrupted run in {out_dir}")
    if resume:
        if not (out_dir / LAST).is_file():
            raise CheckpointError(f"nothing to resume: no checkpoint in {str(out_dir)!r}")
    elif holds_run(out_dir):
        if not overwrite:
            raise RunExists(f"{str(out_dir)!r} already holds a training run; pass --resume to continue it, "
                            "--overwrite to replace it, or choose another --out")
        remove_run(out_dir)


# --8<-- [start:fit]
def fit(model, task, cfg: TrainConfig, out_dir=None, *, resume: bool = False, overwrite: bool = False,
        progress: bool = True, log=print, hooks=(), callback=None, stop_after: int | None = None,
        meta: dict | None = None) -> dict:
    """Train `model` on `task` for cfg.steps optimizer steps; return a summary (history, losses).

    out_dir: where checkpoints (last and best) and metrics.jsonl go (None: nothing is written).
    resume: continue from the last checkpoint in out_dir, exactly (same batches, dropout masks and
    random features as a run that was never stopped; a task that keeps state across steps, such as
    the memory of consecutive segments, starts it afresh in ``task.begin_training``). hooks:
    hook(model) after every optimizer step (a pruning mask, say); callback(step, model) after the hooks. stop_after: end after that many
    steps in total, as if interrupted (the schedule stays that of cfg.steps). meta: extra entries for
    the checkpoints (a compression description, say).
    """
    out_dir = Path(out_dir) if out_dir else None
    comm = world(model.device)                                 # a world of one without mpiexec
    if not comm.is_root:                                       # rank 0 speaks and writes for all
        log, progress = _quiet, False
    _root_first(comm, lambda: _prepare_out_dir(out_dir, resume, overwrite, log))
    backend.tune_host_allocator()
    if cfg.checkpoint_activations:
        checkpoint_blocks(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)                       # draws the training batches (same on every rank)
    probe = task.train_batch(0, cfg.batch_size, np.random.default_rng(0))
    parallel = _data_parallel(model, task, cfg, probe[0].size // cfg.batch_size, comm)
    ranks = parallel if comm.size > 1 else None                # the MPI data-parallel group, if any
    if cfg.zero_stage:
        optimizer = ZeroAdamW(optimizer, comm, cfg.grad_clip)
    start_step, best_val = 0, float("inf")
    if resume:
        try:
            start_step, best_val = _restore(out_dir, model, task, optimizer, rng, parallel, cfg, log, comm)
        except BaseException:
            if parallel is not None:
                parallel.close()
            raise
    task.begin_training(model)                                 # a memory across segments starts empty
    has_val = "val" in task.splits
    baseline = task.baseline()
    log(f"model: {model.kind}, {model.num_parameters():,} parameters | {task.describe()}"
        + (f" | baseline loss {baseline:.3f}" if baseline is not None else ""))
    if parallel is not None:
        log(f"each batch is split over {parallel}")
    if cfg.zero_stage:
        log(f"optimizer: {optimizer}")

    metrics = (out_dir / "metrics.jsonl").open("a") if out_dir and comm.is_root else None
    history, batch_losses = [], []
    tokens_per_step = probe[0].size * cfg.grad_accum
    d_model = getattr(model.config, "d_model", 512)
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, disable=not progress,
               desc="train", dynamic_ncols=True, mininterval=0.5)
    t_last, step_loss, step = time.perf_counter(), float("nan"), start_step
    run = partial_step(task, model.device == "cpu")
    blas = backend.host_blas_threads_limited(max(1, available_cores() // comm.local_size)) if comm.size > 1 \
        else contextlib.nullcontext()
    try:
        with _StopRequest() as stop, blas:
            for step in bar:
                optimizer.lr = learning_rate(step, cfg, d_model)
                step_loss = 0.0
                batches = [task.train_batch(step * cfg.grad_accum + micro, cfg.batch_size, rng)
                           for micro in range(cfg.grad_accum)]
                for batch, share in zip(batches, _shares(task, batches)):   # gradients add up
                    if ranks is not None:                         # this rank's shard of the global batch
                        loss = ranks.forward_backward(batch, share, run)
                    elif parallel is not None:                    # split over threads
                        loss = parallel.forward_backward(batch, dloss=share)
                    else:
                        loss = run(model, batch, share)
                    step_loss += share * loss
                if ranks is not None:
                    step_loss = ranks.reduce_loss(step_loss)      # the global batch's loss
                _check_finite(step_loss, "the training loss", step + 1, out_dir)   # the one host sync
                if cfg.zero_stage:                                 # reduce-scatter, clip, update, all-gather
                    grad_norm = optimizer.step()
                else:
                    if ranks is not None:
                        ranks.reduce_gradients()                  # bucketed all-reduce of the gradients
                    grad_norm = clip_grad_norm(params, cfg.grad_clip)
                    optimizer.step()
                optimizer.zero_grad()
                for hook in hooks:
                    hook(model)
                if callback is not None:
                    callback(step + 1, model)
                batch_losses.append(step_loss)
                now = time.perf_counter()
                tok_s = tokens_per_step / max(now - t_last, 1e-9)
                t_last = now
                bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tok_s:,.0f}", refresh=False)

                if has_val and ((step + 1) % cfg.eval_interval == 0 or step + 1 == cfg.steps):
                    val = evaluate(model, task, "val", cfg.batch_size, cfg.eval_iters, seed=step)
                    trn = evaluate(model, task, "train", cfg.batch_size, cfg.eval_iters, seed=step + 1)
                    _check_finite(val, "the validation loss", step + 1, out_dir)
                    row = {"step": step + 1, "train_loss": trn, "val_loss": val, "batch_loss": step_loss,
                           "lr": optimizer.lr, "grad_norm": float(grad_norm), "tokens_per_s": tok_s,
                           **task.metrics(model)}
                    history.append(row)
                    extra = "".join(f" | {k} {v:.4f}" for k, v in row.items() if k not in
                                    ("step", "train_loss", "val_loss", "batch_loss", "lr", "grad_norm",
                                     "tokens_per_s"))
                    if comm.is_root:
                        bar.write(f"step {step + 1:5d} | train {trn:.4f} | val {val:.4f} | lr {optimizer.lr:.2e}{extra}")
                    if metrics:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                    if out_dir:                                    # only after a finite validation
                        best_val = min(best_val, val)
                        state = _run_state(model, task, cfg, step + 1, rng, parallel, val, best_val, meta)
                        _save(out_dir / LAST, model, optimizer, state, comm)
                        if val <= best_val:
                            _save(out_dir / BEST, model, optimizer, state, comm)
                t_last = time.perf_counter()   # do not charge validation to the next step's throughput
                if _any_rank(comm, stop.requested):                 # every rank stops at the same step
                    _interrupted(out_dir, model, task, optimizer, cfg, step + 1, rng, parallel, best_val, meta, log,
                                 comm)
                if stop_after is not None and step + 1 >= stop_after:
                    break
    finally:
        bar.close()
        if metrics:
            metrics.close()
        if parallel is not None:
            parallel.close()
    return {"history": history, "batch_losses": batch_losses, "model": model, "task": task,
            "baseline": baseline, "final_batch_loss": step_loss, "best_val_loss": best_val,
            "steps": start_step + len(batch_losses)}
# --8<-- [end:fit]


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def partial_step(task, on_host: bool):
    """run(model, batch, dloss): one micro-batch's forward and backward; on a GPU the batch's values
    are checked on the host first, so the model's own checks need no device sync."""
    def run(model, batch, dloss):
        if on_host:
            return task.forward_backward(model, batch, dloss)
        task.check_batch(model, batch)
        with values_checked_on_host():
            return task.forward_backward(model, batch, dloss)
    return run


def _shares(task, batches) -> list[float]:
    """Each micro-batch's weight in the step's mean loss: its share n_k / N of the counted targets
    (1/k each when all count the same), so that accumulation is exact with ignored targets too."""
    counted = [task.counted(batch) for batch in batches]
    total = sum(counted)
    return [n / total for n in counted] if total else [1.0 / len(batches)] * len(batches)


def _root_first(comm, action):
    """Run `action` on rank 0 only; every other rank waits and fails too if it failed there."""
    error = None
    if comm.is_root:
        try:
            action()
        except Exception as err:
            error = err
    failed = comm.bcast_object(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if failed is not None:
        raise DistributedError(f"rank 0 failed: {failed}")


def _any_rank(comm, flag: bool) -> bool:
    """Whether `flag` holds on any rank (one scalar all-reduce when there are several)."""
    return comm.allreduce_scalar(float(flag)) > 0 if comm.size > 1 else flag


def _run_state(model, task, cfg, step, rng, parallel, val, best_val, meta) -> dict:
    """The checkpoint's metadata: what the model is, the task and its tokenizer, where the run is."""
    tokenizer = getattr(task, "tokenizer", None)
    random = {"batches": rng.bit_generator.state, "model": model.random_state()}
    if getattr(parallel, "comm", None) is not None:            # MPI ranks: each rank's own (collective)
        random["ranks"] = parallel.random_state()
    elif parallel is not None and hasattr(parallel, "random_state"):
        random["replicas"] = parallel.random_state()
    return {**(meta or {}), "model": model.describe(), "task": task.state(),
            "tokenizer": tokenizer.to_dict() if tokenizer is not None else None,
            "train_config": asdict(cfg), "step": step, "val_loss": val,
            "best_val_loss": best_val if math.isfinite(best_val) else None, "rng": random}


def _save(path: Path, model, optimizer, state: dict, comm) -> None:
    """Every rank calls it (ZeRO gathers the moments); rank 0 writes."""
    arrays = optimizer.state_arrays()
    if comm.is_root:
        save_checkpoint(path, model.state_dict(), state, arrays)


def _interrupted(out_dir, model, task, optimizer, cfg, step, rng, parallel, best_val, meta, log, comm):
    """Ctrl-C: save the last checkpoint at this step boundary, say how to resume, and stop."""
    if out_dir:
        state = _run_state(model, task, cfg, step, rng, parallel, None, best_val, meta)
        _save(out_dir / LAST, model, optimizer, state, comm)
        log(f"\ninterrupted after step {step}; checkpoint saved in {out_dir}. Continue with the same "
            f"command plus --resume (it runs on to step {cfg.steps}).")
    else:
        log(f"\ninterrupted after step {step} (no output directory: nothing saved)")
    raise KeyboardInterrupt


def _restore(out_dir: Path, model, task, optimizer, rng, parallel, cfg: TrainConfig, log, comm):
    """Load the last checkpoint into the model, optimizer and generators; return (step, best val).
    Rank 0 reads it and broadcasts it (the ranks need not share a file system)."""
    loaded = []
    _root_first(comm, lambda: loaded.append(load_checkpoint(out_dir, "last")))
    state, opt_state, meta = comm.bcast_object(loaded[0] if comm.is_root else None)
    if meta.get("model") != model.describe():
        raise CheckpointError(f"checkpoint in {out_dir} was written for another model configuration: "
                              f"{meta.get('model')} (asked for {model.describe()})")
    if meta.get("task", {}).get("name") != task.state()["name"]:
        raise CheckpointError(f"checkpoint in {out_dir} was written for task {meta.get('task', {}).get('name')!r}, "
                              f"not {task.state()['name']!r}")
    step = meta["step"]
    if step > cfg.steps:
        raise ValueError(f"the checkpoint in {out_dir} is at step {step}, past --steps {cfg.steps} "
                         "(on resume, --steps is the total number of steps of the run)")
    saved = meta.get("train_config", {})
    changed = {k: (saved[k], v) for k, v in asdict(cfg).items() if k in saved and saved[k] != v}
    if changed:
        log("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            + (" (the learning-rate schedule now ends at step " f"{cfg.steps})" if "steps" in changed else ""))
    model.load_state_dict(state)
    optimizer.load_state_arrays(opt_state)
    optimizer.t = step
    rng.bit_generator.state = meta["rng"]["batches"]
    model.set_random_state(meta["rng"]["model"])
    if comm.size > 1:
        saved = meta["rng"].get("ranks", [])
        if not parallel.set_random_state(saved):
            log(f"the run was saved with {max(len(saved), 1)} rank(s) and resumes with {comm.size}: the batches, "
                "weights and optimizer state continue exactly; the dropout masks of ranks other than 0 start afresh")
    elif parallel is not None and "replicas" in meta["rng"]:
        parallel.set_random_state(meta["rng"]["replicas"])
    if comm.is_root:
        _truncate_metrics(out_dir / "metrics.jsonl", step)
    log(f"resuming from step {step} of {cfg.steps} ({checkpoint_file(out_dir)})")
    best = meta.get("best_val_loss")
    return step, float("inf") if best is None else best
