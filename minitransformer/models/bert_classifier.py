r"""BERT fine-tuned for classification: the pretrained encoder, a fresh linear layer on the pooler.

$$\text{logits} = \mathrm{drop}(p)\, W_c + b_c,\qquad p = \tanh(h_{\mathrm{[CLS]}} W_p + b_p),$$

for one sentence (``[CLS] A [SEP]``) or a pair (``[CLS] A [SEP] B [SEP]`` with segments 0 and 1).
The encoder's parameters have the names they have inside `BertModel` (``encoder.*``), so the
weights of a pretrained checkpoint load into it unchanged and, after fine-tuning, back into the
pretrained model (to measure what the fine-tuning did to its masked-LM loss).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import backend
from ..config import require_int
from ..gradcheck import register
from ..nn.checks import check_targets
from ..nn.dropout import Dropout
from ..nn.functional.cross_entropy import cross_entropy_forward
from ..nn.linear import Linear
from .bert import BertConfig, BertEncoder, check_bert_inputs, gradcheck_bert
from .model import IGNORE_INDEX, Model
from .registry import register_model


@dataclass(frozen=True)
class BertClassifierConfig(BertConfig):
    n_classes: int = 2              # labels of the downstream task

    def __post_init__(self):
        super().__post_init__()
        require_int(self, "n_classes", 2)


@register_model("bert-classifier", BertClassifierConfig, "BERT encoder + a linear layer on the pooled "
                "[CLS] (fine-tuning)")
class BertClassifier(Model):
    """BertEncoder -> pooler -> dropout -> Linear(C, n_classes)."""

    def __init__(self, config: BertClassifierConfig, seed: int = 0):
        super().__init__()
        self.config = c = config
        rng = backend.host_rng(seed)
        self.encoder = BertEncoder(c, rng)
        self.drop = Dropout(c.dropout, seed=seed + 1)
        self.head = Linear(c.d_model, c.n_classes, rng=rng, std=0.02)
        self.cache = None

    # --8<-- [start:classifier]
    def forward(self, tokens, segments=None, labels=None):
        """tokens (B,T) (and segments) -> logits (B, n_classes); with labels (B,) the mean CE."""
        c = self.config
        segments = check_bert_inputs(c, tokens, segments, self.device, "BERT classifier")
        h, pooled = self.encoder(tokens, segments, pool=True)
        logits = self.head(self.drop(pooled))              # (B,C) -> (B,n_classes)
        loss = ce_cache = None
        if labels is not None:
            check_targets(labels, "BERT classifier labels", c.n_classes, IGNORE_INDEX, tokens.shape[:1])
            loss, ce_cache = cross_entropy_forward(logits, labels)
        self.cache = (h.shape, ce_cache) if self.keep_cache else None
        return logits, loss

    def backward(self, dlogits=None, dloss: float = 1.0):
        shape, ce_cache = self.saved_cache()
        dlogits = self.output_gradient(dlogits, dloss, ce_cache)
        dpooled = self.drop.backward(self.head.backward(dlogits))   # (B,n_classes) -> (B,C)
        xp = backend.get_array_module(dpooled)
        self.encoder.backward(xp.zeros(shape, dtype=dpooled.dtype), dpooled)   # only the pooler reads h
    # --8<-- [end:classifier]


@register("models.BertClassifier")
def _gradcheck_bert_classifier(device: str):
    cfg = BertClassifierConfig(vocab_size=11, max_len=6, n_layer=2, n_head=2, d_model=8, d_ff=12,
                               dropout=0.0, n_classes=3)
    model = BertClassifier(cfg, seed=53).to(device, "float64")
    return gradcheck_bert(device, "models.BertClassifier(bert encoder + pooler + head)", model, 11, classifier=True)
