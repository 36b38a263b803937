"""DeeBERT (Xin et al., 2020) on a fine-tuned transformers classifier: an off-ramp classifier after every encoder
layer, and the model cut into one stage per layer so that in OpenVINO an input really stops at its exit layer.

Stage 1 is the embeddings, layer 1 and off-ramp 1 (inputs `input_ids`, `attention_mask`, and `token_type_ids`
for BERT); stage k is layer k and off-ramp k (inputs `hidden_states`, `attention_mask`). Every stage returns the
layer's output (`layer_output`, the next stage's `hidden_states`) and `logits`, in that order. The last stage's off-ramp is the model's own head, so running every stage is the
fine-tuned classifier itself (DeeBERT's first training stage); the other off-ramps are trained afterwards on the
frozen model (its second stage, `train_ramps`).

Encoders: BERT (all-MiniLM-L6-v2) and MPNet (all-mpnet-base-v2), loaded with eager attention, to which each stage
hands an additive mask it computes from `attention_mask`.
"""

from __future__ import annotations

import torch
from torch import nn

import sequence_classifier

SUPPORTED = ("bert", "mpnet")


def load_classifier(folder: str):
    """The fine-tuned classifier, eval mode, eager attention (a plain additive mask, traceable per layer)."""
    model = sequence_classifier.load(folder, attn_implementation="eager").eval()
    if model.config.model_type not in SUPPORTED:
        raise SystemExit(f"error: early exit supports {', '.join(SUPPORTED)} encoders; {folder} is {model.config.model_type}")
    return model


def num_layers(model) -> int:
    return model.config.num_hidden_layers


def takes_token_types(model) -> bool:
    return model.config.model_type == "bert"


def pooled(model, hidden, attention_mask):
    """What the model's head reads: the first token's vector, or the masked mean (sequence_classifier's mean
    pooling)."""
    if sequence_classifier.pooling_of(model) == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return hidden[:, 0]


def head_logits(model, hidden, attention_mask):
    """The model's own classifier on the last layer's output (eval mode: no dropout)."""
    if model.config.model_type == "mpnet":
        return model.classifier(hidden)
    if sequence_classifier.pooling_of(model) == "mean":
        return model.classifier(pooled(model, hidden, attention_mask))
    return model.classifier(model.bert.pooler(hidden))


def ramp_init(model):
    """The (dense, output) linear layers of the model's head, the off-ramps' starting point: a ramp is dense ->
    tanh -> output on the pooled vector, like BERT's pooler + classifier and MPNet's head."""
    hidden, labels = model.config.hidden_size, model.config.num_labels
    if model.config.model_type == "mpnet":
        dense, out = model.classifier.dense, model.classifier.out_proj
    elif sequence_classifier.pooling_of(model) == "cls":
        dense, out = model.bert.pooler.dense, model.classifier
    else:  # a mean-pooling head has no dense layer: the ramps' starts as the identity (then tanh, unlike the head)
        eye = nn.Linear(hidden, hidden)
        with torch.no_grad():
            eye.weight.copy_(torch.eye(hidden))
            eye.bias.zero_()
        dense, out = eye, model.classifier
    assert out.weight.shape == (labels, hidden)
    return dense, out


class Ramps(nn.Module):
    """One off-ramp per layer but the last (whose ramp is the model's head): dense -> tanh -> linear."""

    def __init__(self, model):
        super().__init__()
        dense, out = ramp_init(model)
        hidden, labels = model.config.hidden_size, model.config.num_labels
        self.dense = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers(model) - 1))
        self.out = nn.ModuleList(nn.Linear(hidden, labels) for _ in range(num_layers(model) - 1))
        with torch.no_grad():
            for d, o in zip(self.dense, self.out):
                d.load_state_dict(dense.state_dict())
                o.load_state_dict(out.state_dict())

    def forward(self, layer: int, features):
        """Logits of ramp `layer` (0-based) on pooled features."""
        return self.out[layer](torch.tanh(self.dense[layer](features)))


def additive_mask(attention_mask, dtype):
    """(batch, 1, 1, length): 0 where attended, the dtype's minimum at padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def embed(model, input_ids, token_type_ids=None):
    if model.config.model_type == "mpnet":
        return model.mpnet.embeddings(input_ids=input_ids)
    # Positions passed explicitly (0..length-1, what BERT's buffer slice gives) so the traced graph reads no buffer.
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    return model.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=positions)


def run_layer(model, index: int, hidden, attention_mask):
    """Encoder layer `index` (0-based) on hidden states, as the model's own encoder calls it."""
    mask = additive_mask(attention_mask, hidden.dtype)
    if model.config.model_type == "mpnet":
        bias = model.mpnet.encoder.compute_position_bias(hidden)
        out = model.mpnet.encoder.layer[index](hidden, mask, bias)
    else:
        out = model.bert.encoder.layer[index](hidden, mask)
    return out[0] if isinstance(out, tuple) else out


def layer_states(model, input_ids, attention_mask, token_type_ids=None) -> list:
    """Every layer's output (a list of num_layers tensors)."""
    hidden = embed(model, input_ids, token_type_ids)
    states = []
    for index in range(num_layers(model)):
        hidden = run_layer(model, index, hidden, attention_mask)
        states.append(hidden)
    return states


class Stage(nn.Module):
    """Layer `index` (1 and on, 0-based) of the model and its off-ramp: the unit the OpenVINO runtime runs."""

    def __init__(self, model, ramps: Ramps, index: int):
        super().__init__()
        self.model, self.ramps, self.index = model, ramps, index

    def forward(self, hidden_states, attention_mask):
        return self.layer_and_ramp(hidden_states, attention_mask)

    def layer_and_ramp(self, hidden, attention_mask):
        hidden = run_layer(self.model, self.index, hidden, attention_mask)
        if self.index == num_layers(self.model) - 1:
            return hidden, head_logits(self.model, hidden, attention_mask)
        return hidden, self.ramps(self.index, pooled(self.model, hidden, attention_mask))


class FirstStage(Stage):
    """The embeddings, layer 1 and its off-ramp."""

    def __init__(self, model, ramps: Ramps):
        super().__init__(model, ramps, 0)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.layer_and_ramp(embed(self.model, input_ids, token_type_ids), attention_mask)


def stage(model, ramps: Ramps, index: int) -> Stage:
    return FirstStage(model, ramps) if index == 0 else Stage(model, ramps, index)
