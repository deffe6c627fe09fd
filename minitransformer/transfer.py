"""Transfer learning: a pretrained BERT's encoder under a fresh classification head, fine-tuned.

``classifier_from_pretrained`` builds a `BertClassifier` whose encoder holds the pretrained
weights (the names match: ``encoder.*``) and whose head is new; ``finetune`` trains it with the one
loop (``train.fit``); ``mlm_loss_after_finetuning`` puts the fine-tuned encoder back under the
pretrained MLM head and measures the masked-LM loss again: how much of the pretraining the
fine-tuning kept (a high learning rate forgets).
"""
from __future__ import annotations

import dataclasses

from .checkpoint import CheckpointError, load_model, tokenizer_of
from .models.bert import BertModel
from .models.bert_classifier import BertClassifier, BertClassifierConfig
from .train import TrainConfig, fit

ENCODER = "encoder."


def load_pretrained_bert(path, device: str = "cpu"):
    """(BertModel, tokenizer) from a `minitransformer train --model bert` checkpoint; a checkpoint
    of another kind is a CheckpointError that names it."""
    model, meta = load_model(path, device)
    if not isinstance(model, BertModel):
        raise CheckpointError(f"{path} holds a {model.kind!r} model; expected a pretrained 'bert' checkpoint "
                              "(from `minitransformer train --model bert`)")
    return model, tokenizer_of(meta, path)


def encoder_state(model) -> dict:
    """The encoder's arrays (embeddings, blocks, pooler) by their shared names."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(ENCODER)}


def load_encoder(target, source) -> None:
    """Copy `source`'s encoder weights into `target`'s (same encoder configuration)."""
    mine = {k: v for k, v in target.state_dict().items() if not k.startswith(ENCODER)}
    target.load_state_dict({**mine, **encoder_state(source)})


# --8<-- [start:from_pretrained]
def classifier_from_pretrained(pretrained: BertModel | None, config, n_classes: int, seed: int = 0,
                               device: str = "cpu", dtype: str = "float32") -> BertClassifier:
    """A BertClassifier of `config`'s encoder with `n_classes` outputs: its encoder copied from
    `pretrained`, or freshly initialised when `pretrained` is None (training from scratch)."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "n_classes"}
    model = BertClassifier(BertClassifierConfig(**fields, n_classes=n_classes), seed=seed).to(device, dtype)
    if pretrained is not None:
        load_encoder(model, pretrained)
    return model
# --8<-- [end:from_pretrained]


def finetune(model, task, cfg: TrainConfig, out_dir=None, progress: bool = False, log=None, overwrite: bool = False):
    """Train `model` on the labelled `task` with `cfg`; returns `fit`'s summary."""
    return fit(model, task, cfg, out_dir, progress=progress, log=log or (lambda *a: None), overwrite=overwrite)


def mlm_loss_after_finetuning(pretrained: BertModel, classifier: BertClassifier, pretraining_task) -> float:
    """The masked-LM validation loss of `pretrained`'s heads on top of `classifier`'s encoder."""
    probe = BertModel(pretrained.config).to(pretrained.device, pretrained.dtype)
    probe.load_state_dict(pretrained.state_dict())
    load_encoder(probe, classifier)
    return pretraining_task.metrics(probe)["mlm_loss"]
