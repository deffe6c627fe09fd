"""Named runs, at the edge: presets for every model family, configuration files, and starting a run.

``minitransformer train --model NAME --preset PRESET`` picks a family and one of its presets:

* ``gpt`` (causal language modelling on text): ``default`` (the README's main job, a small GPT on the
  built-in corpus, a few minutes on 2 CPU cores), ``tiny`` (seconds, for smoke tests),
  ``shakespeare-cpu`` / ``shakespeare-gpu`` (nanoGPT's character-level baselines; run them with
  ``--data ../shared/data/tinyshakespeare.txt``).
* ``seq2seq`` (the encoder-decoder Transformer reversing digit strings): ``default``, ``tiny``.
* ``lstm`` (the recurrent language model of chapter 37, on the same text task as ``gpt``):
  ``default``, ``tiny``.
* ``t5`` (text-to-text: reverse, sort, upper-case and add, told apart by a prefix, on the words of
  the built-in corpus or of ``--data FILE``): ``default``, ``tiny``.
* ``classifier`` (an encoder read out at [CLS], on the long-range retrieval task of
  ``data/long_range.py``): ``default``, ``tiny``.
* ``xl`` (Transformer-XL) and ``compressive`` (the Compressive Transformer): text read in
  consecutive segments with memory (``tasks/segments.py``): ``default``, ``tiny``.
* ``vit`` (the Vision Transformer, 4x4 patches of scikit-learn's 8x8 digits, stratified 80/20, 10% of
  the 80% held out for validation): ``default`` (about 13 CPU s on one core), ``tiny``. ``--data``
  names the image set: ``digits`` (the default) or ``shapes`` (generated, no scikit-learn needed).
* ``bert`` (masked-LM + next-sentence pretraining on the built-in corpus or ``--data``, with a
  WordPiece tokenizer trained first): ``default``, ``tiny``, and the variants ``roberta-tiny``
  (no NSP, dynamic masking, twice the steps), ``albert-tiny`` (E = 16, shared layers).

A configuration file (TOML or JSON) may name a ``family`` and a ``preset`` to start from, then change
fields in ``[model]`` and ``[train]``:

    family = "gpt"
    preset = "default"
    [model]
    n_layer = 6
    [train]
    steps = 3000

Unknown keys raise ValueError naming the key and the allowed ones. Models never read files: this
module maps the files onto their frozen config dataclasses.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import replace
from .models.bert import BertConfig
from .models.classifier import ClassifierConfig
from .models.compressive import CompressiveConfig
from .models.gpt import GPTConfig
from .models.gpt_vector import VectorGPTConfig
from .models.lstm import LSTMConfig
from .models.seq2seq import Seq2SeqConfig
from .models.t5 import T5Config
from .models.transformer_xl import TransformerXLConfig
from .models.vit import ViTConfig
from .train import TrainConfig

PRESETS = {
    "gpt": {
        "default": (
            GPTConfig(n_layer=4, n_head=4, d_model=128, block_size=64, dropout=0.0),
            TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100,
                        eval_interval=250, eval_iters=20),
        ),
        "tiny": (
            GPTConfig(n_layer=2, n_head=2, d_model=32, block_size=32),
            TrainConfig(steps=60, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5, eval_interval=30,
                        eval_iters=4, sample_tokens=40),
        ),
        "shakespeare-cpu": (
            GPTConfig(n_layer=4, n_head=4, d_model=128, block_size=64, dropout=0.0),
            TrainConfig(steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100,
                        eval_interval=250, eval_iters=20),
        ),
        "shakespeare-gpu": (
            GPTConfig(n_layer=6, n_head=6, d_model=384, block_size=256, dropout=0.2),
            TrainConfig(steps=5000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=100,
                        eval_interval=250, eval_iters=200),
        ),
    },
    # --8<-- [start:seq2seq_presets]
    "seq2seq": {
        "default": (
            Seq2SeqConfig(n_layer=2, n_dec_layer=2, n_head=4, d_model=64, norm="pre"),
            TrainConfig(steps=1500, batch_size=32, lr=2e-3, min_lr=2e-4, warmup=100, weight_decay=0.0,
                        eval_interval=250, eval_iters=8, num_samples=0),
        ),
        "tiny": (
            Seq2SeqConfig(n_layer=1, n_dec_layer=1, n_head=2, d_model=32, norm="pre"),
            TrainConfig(steps=60, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=5, weight_decay=0.0,
                        eval_interval=30, eval_iters=2, num_samples=0),
        ),
    },
    # --8<-- [end:seq2seq_presets]
    "classifier": {
        "default": (
            ClassifierConfig(n_layer=1, n_head=2, d_model=32),
            TrainConfig(steps=300, batch_size=32, lr=3e-3, min_lr=3e-4, warmup=20, weight_decay=0.0,
                        eval_interval=100, eval_iters=4, num_samples=0),
        ),
        "tiny": (
            ClassifierConfig(n_layer=1, n_head=2, d_model=16),
            TrainConfig(steps=40, batch_size=16, lr=1e-2, min_lr=1e-3, warmup=2, weight_decay=0.0,
                        eval_interval=20, eval_iters=2, num_samples=0),
        ),
    },
    "lstm": {
        "default": (
            LSTMConfig(n_layer=2, d_model=128, block_size=64),
            TrainConfig(steps=2000, batch_size=12, lr=3e-3, min_lr=3e-4, warmup=100,
                        eval_interval=250, eval_iters=20),
        ),
        "tiny": (
            LSTMConfig(n_layer=1, d_model=32, block_size=32),
            TrainConfig(steps=60, batch_size=8, lr=1e-2, min_lr=1e-3, warmup=5, eval_interval=30,
                        eval_iters=4, sample_tokens=40),
        ),
    },
    # --8<-- [start:memory_presets]
    "xl": {
        "default": (
            TransformerXLConfig(segment_len=32, mem_len=32, n_layer=2, n_head=4, d_model=64),
            TrainConfig(steps=1500, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=50, eval_interval=250,
                        eval_iters=8),
        ),
        "tiny": (
            TransformerXLConfig(segment_len=16, mem_len=16, n_layer=2, n_head=2, d_model=32),
            TrainConfig(steps=60, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5, eval_interval=30,
                        eval_iters=2, sample_tokens=40),
        ),
    },
    "compressive": {
        "default": (
            CompressiveConfig(segment_len=32, mem_len=32, cmem_len=16, compression_rate=4, n_layer=2,
                              n_head=4, d_model=64),
            TrainConfig(steps=1500, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=50, eval_interval=250,
                        eval_iters=8),
        ),
        "tiny": (
            CompressiveConfig(segment_len=16, mem_len=16, cmem_len=8, compression_rate=4, n_layer=2,
                              n_head=2, d_model=32),
            TrainConfig(steps=60, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=5, eval_interval=30,
                        eval_iters=2, sample_tokens=40),
        ),
    },
    # --8<-- [end:memory_presets]
    # --8<-- [start:vit_presets]
    "vit": {
        "default": (
            ViTConfig(patch_size=4, n_layer=2, n_head=4, d_model=64, dropout=0.1),
            # threads=1: five tokens per image are too few for threads to pay (auto_threads counts pixels)
            TrainConfig(steps=2000, batch_size=64, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.05,
                        eval_interval=500, eval_iters=4, num_samples=0, threads=1),
        ),
        "tiny": (
            ViTConfig(patch_size=4, n_layer=1, n_head=2, d_model=16),
            TrainConfig(steps=60, batch_size=32, lr=1e-2, min_lr=1e-3, warmup=5, weight_decay=0.0,
                        eval_interval=30, eval_iters=2, num_samples=0),
        ),
    },
    # --8<-- [end:vit_presets]
    # --8<-- [start:t5_presets]
    "t5": {
        "default": (
            T5Config(n_layer=2, n_dec_layer=2, n_head=4, d_model=64),
            TrainConfig(steps=1500, batch_size=32, lr=3e-3, min_lr=3e-4, warmup=100, weight_decay=0.0,
                        eval_interval=500, eval_iters=4, num_samples=0),
        ),
        "tiny": (
            T5Config(n_layer=1, n_dec_layer=1, n_head=2, d_model=32),
            TrainConfig(steps=40, batch_size=16, lr=3e-3, min_lr=3e-4, warmup=5, weight_decay=0.0,
                        eval_interval=20, eval_iters=2, num_samples=0),
        ),
    },
    # --8<-- [end:t5_presets]
    # --8<-- [start:bert_presets]
    "bert": {
        "default": (
            BertConfig(vocab_size=2000, max_len=64, n_layer=4, n_head=4, d_model=128, dropout=0.1),
            TrainConfig(steps=3000, batch_size=32, lr=1e-3, min_lr=1e-4, warmup=150, weight_decay=0.01,
                        eval_interval=500, eval_iters=8, threads=1, num_samples=0),
        ),
        "tiny": (
            BertConfig(vocab_size=1000, max_len=64, n_layer=2, n_head=2, d_model=64, dropout=0.1),
            TrainConfig(steps=60, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=6, weight_decay=0.01,
                        eval_interval=30, eval_iters=2, threads=1, num_samples=0),
        ),
        "roberta-tiny": (
            BertConfig(vocab_size=1000, max_len=64, n_layer=2, n_head=2, d_model=64, dropout=0.1,
                       nsp=False, masking="dynamic"),
            TrainConfig(steps=120, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=6, weight_decay=0.01,
                        eval_interval=60, eval_iters=2, threads=1, num_samples=0),
        ),
        "albert-tiny": (
            BertConfig(vocab_size=1000, max_len=64, n_layer=2, n_head=2, d_model=64, dropout=0.1,
                       d_embed=16, share_layers=True),
            TrainConfig(steps=60, batch_size=16, lr=2e-3, min_lr=2e-4, warmup=6, weight_decay=0.01,
                        eval_interval=30, eval_iters=2, threads=1, num_samples=0),
        ),
    },
    # --8<-- [end:bert_presets]
}
# --8<-- [start:prompt_presets]
# prompting experiments (tasks/prompting, `train --task NAME`): a preset per task, named like it
_PROMPT_TRAIN = dict(batch_size=32, lr=3e-3, min_lr=3e-4, warmup=50, weight_decay=0.0, eval_interval=250,
                     eval_iters=4, num_samples=0, threads=1)
PRESETS["gpt"].update({
    # induction: learned positions; with RoPE the 2-layer model copied only repeats of n >= 10 (chapter 36)
    "induction": (GPTConfig(n_layer=2, n_head=4, d_model=64, block_size=40, ffn=False, positional="learned"),
                  TrainConfig(steps=8000, **{**_PROMPT_TRAIN, "batch_size": 64, "eval_interval": 1000})),
    "induction-1layer": (GPTConfig(n_layer=1, n_head=4, d_model=64, block_size=40, ffn=False, positional="learned"),
                         TrainConfig(steps=3000, **{**_PROMPT_TRAIN, "batch_size": 64, "eval_interval": 1000})),
    "fewshot": (GPTConfig(n_layer=2, n_head=4, d_model=48, block_size=96),
                TrainConfig(steps=3500, **{**_PROMPT_TRAIN, "lr": 2e-3})),
    "addition": (GPTConfig(n_layer=2, n_head=4, d_model=64, block_size=64),
                 TrainConfig(steps=2000, **{**_PROMPT_TRAIN, "lr": 2e-3})),
    "addition-scratchpad": (GPTConfig(n_layer=2, n_head=4, d_model=64, block_size=64),
                            TrainConfig(steps=2000, **{**_PROMPT_TRAIN, "lr": 2e-3})),
    "roles": (GPTConfig(n_layer=2, n_head=2, d_model=32, block_size=40),
              TrainConfig(steps=2000, **_PROMPT_TRAIN)),
})
PRESETS["gpt-vector"] = {
    "default": (VectorGPTConfig(n_layer=3, n_head=2, d_model=48, block_size=24),
                TrainConfig(steps=6000, **{**_PROMPT_TRAIN, "batch_size": 64, "lr": 2e-3, "min_lr": 2e-4})),
}
PRESETS["gpt-vector"]["icl-linear"] = PRESETS["gpt-vector"]["default"]
# --8<-- [end:prompt_presets]
MEMORY_FAMILIES = ("xl", "compressive")    # read text in consecutive segments, memory carried
TEXT_FAMILIES = ("gpt", "lstm") + MEMORY_FAMILIES
IMAGE_FAMILIES = ("vit",)     # --data names an image set (data/images.py), not a file
CORPUS_FAMILIES = TEXT_FAMILIES + ("bert",)   # families that train on the corpus or --data, with a tokenizer


def read_config_file(path) -> dict:
    """Parse a TOML or JSON file into a dict; unreadable files raise a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"config file {str(path)!r} cannot be read: {err}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {err}") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {err}") from None


def load_run_config(family: str | None = None, preset: str | None = None, path=None,
                    overrides: dict | None = None):
    """(family, model config, TrainConfig): a family's preset, then a config file, then overrides.
    Explicit `family` / `preset` arguments win over the file's."""
    data = read_config_file(path) if path else {}
    unknown = sorted(set(data) - {"family", "preset", "model", "train"})
    if unknown:
        raise ValueError(f"unknown top-level key(s) {unknown} in {path}; allowed: family, preset, model, train")
    family = family or data.get("family", "gpt")
    if family not in PRESETS:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(PRESETS)}")
    name = preset or data.get("preset", "default")
    if name not in PRESETS[family]:
        raise ValueError(f"unknown preset {name!r} for --model {family}; known: {sorted(PRESETS[family])}")
    model_cfg, train_cfg = PRESETS[family][name]
    model_cfg = replace(model_cfg, data.get("model", {}), f"{path} [model]")
    train_cfg = replace(train_cfg, data.get("train", {}), f"{path} [train]")
    overrides = overrides or {}
    model_cfg = replace(model_cfg, overrides.get("model", {}), "command-line model options")
    train_cfg = replace(train_cfg, overrides.get("train", {}), "command-line train options")
    return family, model_cfg, train_cfg


def make_task(family: str, model_cfg, train_cfg: TrainConfig, data=None, tokenizer=None, task=None):
    """The task a family trains on by default: text for GPT (a file, or the built-in corpus),
    the synthetic reversal task for seq2seq, an image set for ViT (`data` names it: digits, shapes);
    `task` names a prompting task instead."""
    from .tasks import CausalLMTask, ReverseTask
    if task is not None or family == "gpt-vector":                   # tasks/prompting, by name
        from .tasks.prompting import make_prompt_task
        if data:
            raise ValueError(f"--data and --task {task} exclude each other: a task generates its own data")
        return make_prompt_task(task or "icl-linear", family, seed=train_cfg.seed)
    if family in MEMORY_FAMILIES:
        from .data.corpus import default_corpus, load_text
        from .tasks.segments import SegmentLMTask
        text = load_text(data) if data else default_corpus()
        return SegmentLMTask.from_text(text, model_cfg.segment_len, train_cfg.val_fraction, tokenizer)
    if family == "bert":
        from .tasks.bert_pretraining import pretraining_task
        return pretraining_task(model_cfg, seed=train_cfg.seed, data=data, tokenizer=tokenizer)
    if family in TEXT_FAMILIES:
        from .data.corpus import default_corpus, load_text
        text = load_text(data) if data else default_corpus()
        return CausalLMTask.from_text(text, model_cfg.block_size, train_cfg.val_fraction, tokenizer)
    if family in IMAGE_FAMILIES:
        from .tasks.image_classification import IMAGE_SETS, ImageClassificationTask
        if data is not None and data not in IMAGE_SETS:
            raise ValueError(f"--data for --model {family} names an image set, one of {list(IMAGE_SETS)}; "
                             f"got {data!r}")
        return ImageClassificationTask.named(data or "digits", seed=0)
    if family == "t5":                                # text-to-text tasks on the words of a text
        from .data.corpus import default_corpus, load_text
        from .tasks.text_to_text import TextToTextTask
        return TextToTextTask(load_text(data) if data else default_corpus(), seed=train_cfg.seed)
    if data:
        raise ValueError(f"--data is for the text models ({', '.join(CORPUS_FAMILIES)}); --model {family} "
                         "trains on its synthetic task")
    if family == "seq2seq":
        return ReverseTask(max_len=min(model_cfg.max_src_len, model_cfg.max_tgt_len, 8), seed=train_cfg.seed)
    if family == "classifier":
        from functools import partial

        from .data.long_range import RetrievalTask, retrieval_batch
        from .tasks.classification import ClassificationTask
        data = RetrievalTask(seq_len=min(model_cfg.max_len, 32), min_distance=2, max_distance=31)
        return ClassificationTask(partial(retrieval_batch, data), data.n_classes, val_batches=2,
                                  config_fields={"vocab_size": data.vocab_size, "n_classes": data.n_classes,
                                                 "max_len": data.seq_len},
                                  description=f"long-range retrieval over {data.seq_len} tokens, "
                                              f"{data.n_classes} classes")
    raise ValueError(f"model family {family!r} has no default task")


def start_run(family: str, model_cfg, train_cfg: TrainConfig, data=None, out_dir=None, device: str = "cpu",
              resume: bool = False, overwrite: bool = False, progress: bool = True, log=print,
              stop_after: int | None = None, task: str | None = None) -> dict:
    """Build the task and the model of a family and train it with `train.fit`; on resume the task
    takes the tokenizer the checkpoint recorded."""
    from . import backend
    from .checkpoint import LAST, CheckpointError, load_checkpoint, tokenizer_of
    from .models.registry import build_model
    from .train import fit

    backend.check_device(device)
    tokenizer = None
    if resume and out_dir and not (Path(out_dir) / LAST).is_file():
        raise CheckpointError(f"nothing to resume: no checkpoint in {str(out_dir)!r}")
    if resume and out_dir and family in CORPUS_FAMILIES:
        _, _, meta = load_checkpoint(out_dir, "last")
        tokenizer = tokenizer_of(meta, out_dir)
    task = make_task(family, model_cfg, train_cfg, data, tokenizer, task)
    model_cfg = task.adapt(model_cfg)
    model = build_model(family, model_cfg, seed=train_cfg.seed).to(device, train_cfg.dtype)
    return fit(model, task, train_cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress,
               log=log, stop_after=stop_after)
