"""The second tier's torch model: a transformers sequence classifier whose head reads either the [CLS] token
(the transformers default) or the mean of the token vectors.

all-MiniLM-L6-v2 is a sentence-embedding checkpoint: it was trained to summarise a sentence as the mean of its
token vectors, while BERT's classification head reads the [CLS] token through a pooler that checkpoint never
trained. `pooling="mean"` puts the head on the masked mean instead. The choice is stored in config.json
(`tango_pooling`) and `load` restores it; the exported IR carries it in its graph, so the runtime never needs
to know.
"""

from __future__ import annotations

import _common

POOLING_KEY = "tango_pooling"
POOLINGS = ("cls", "mean")


def create(base: str, pooling: str = "cls", **config_kwargs):
    """A classifier initialised from `base` (folder or hub id) with a new head over the chosen pooling."""
    transformers = _common.require("transformers")
    config = transformers.AutoConfig.from_pretrained(base, **config_kwargs)
    setattr(config, POOLING_KEY, pooling)
    return _model_class(config).from_pretrained(base, config=config)


def load(path: str, **kwargs):
    """A classifier saved by `create`'s model (or any transformers sequence classifier), with its pooling."""
    transformers = _common.require("transformers")
    config = transformers.AutoConfig.from_pretrained(path)
    return _model_class(config).from_pretrained(path, config=config, **kwargs)


def pooling_of(model) -> str:
    return getattr(model.config, POOLING_KEY, "cls")


def _model_class(config):
    transformers = _common.require("transformers")
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    pooling = getattr(config, POOLING_KEY, "cls")
    if pooling not in POOLINGS:
        raise SystemExit(f"error: unknown {POOLING_KEY} {pooling!r} in the model's config.json (expected one of {', '.join(POOLINGS)})")
    default = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    if pooling == "cls":
        return default
    return _mean_pooling(default, transformers)


def _mean_pooling(default, transformers):
    """Subclass a BERT-style classifier (encoder, dropout, one linear layer) to read the masked token mean."""
    torch = _common.require("torch")
    SequenceClassifierOutput = transformers.modeling_outputs.SequenceClassifierOutput

    class MeanPooling(default):
        def __init__(self, config):
            super().__init__(config)
            if not isinstance(getattr(self, "classifier", None), torch.nn.Linear) or not hasattr(self, "dropout"):
                raise SystemExit(f"error: mean pooling needs a BERT-style head (dropout, one linear layer); {default.__name__} has another")

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            encoder_kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.base_model(input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            logits = self.classifier(self.dropout(pooled))
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return SequenceClassifierOutput(loss=loss, logits=logits)

    MeanPooling.__name__ = MeanPooling.__qualname__ = f"MeanPooling{default.__name__}"
    return MeanPooling
