"""First-tier student architectures (torch), all reading tier 2's WordPiece ids.

Each student maps the shared 30k WordPiece ids to a small vocabulary (the ids seen in its training data)
through a constant remap table inside the graph, so it keeps the second tier's tokenizer (tokenize once at
run time) with an embedding table a fraction of the size.

- `bilstm`: the paper's first tier: embeddings, two stacked bidirectional LSTM layers, a feed-forward head
  on the final hidden states.
- `cnn`: Kim (2014) style: a 1-D convolution over 5-token windows, max-pool over time, a linear head.
- `cnn2`: two stacked width-3 convolutions (the same 5-token reach with fewer multiply-adds, one more
  non-linearity), max-pool over time, a linear head.
- `cnn3`: three stacked width-3 convolutions dilated 1, 2 and 4 (a 15-token reach for 1.2x cnn's
  multiply-adds), max-pool over time, a linear head; `cnn4` adds a fourth dilated 8 (31 tokens, 1.5x).
- `bow`: fastText-style: mean of unigram and hashed-bigram embeddings, a small feed-forward head.
- `siamese` (sentence pairs): cnn3's convolutions encode each sentence of the pair on its own, max-pooled to u
  and v; a feed-forward head reads [u, v, |u - v|, u * v] (Conneau et al. 2017). The other students read the
  joined pair as one sequence, as tier 2 does.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("cnn", "cnn2", "cnn3", "cnn4", "bow", "bilstm", "siamese")
BIGRAM_BUCKETS = 32749  # a prime: (first * BIGRAM_MULTIPLIER + second) mod it spreads the pairs
# OpenVINO's CPU plugin does not keep int64 arithmetic exact: a pair id above 2**24 hashed differently there
# than in torch (3 points of accuracy lost). 509 keeps first * 509 + second below 2**24 for 32k ids.
BIGRAM_MULTIPLIER = 509


class _Student(nn.Module):
    def __init__(self, remap: torch.Tensor, vocab: int, dim: int):
        super().__init__()
        self.register_buffer("remap", remap.long(), persistent=True)
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)

    def tokens(self, input_ids, attention_mask):
        ids = self.remap[input_ids] * attention_mask  # padding -> row 0
        return ids, attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)


class CNNStudent(_Student):
    """One bias-free convolution (width 5 covers Kim's 3/4/5-grams: narrower filters learn zero taps), ReLU,
    max over time. Padding rows embed to zero, so windows that see only padding give exactly 0 and can never
    win the max of a ReLU: the answer does not depend on batch padding, with no mask or slice in the graph
    (each of those cost OpenVINO a FakeQuantize or a reference kernel per batch)."""

    def __init__(self, remap, vocab, num_labels, dim=128, filters=256, width=5, dropout=0.2):
        super().__init__(remap, vocab, dim)
        self.conv = nn.Conv1d(dim, filters, width, padding=width - 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters, num_labels)

    def forward(self, input_ids, attention_mask):
        ids, _ = self.tokens(input_ids, attention_mask)
        x = self.embed(ids).transpose(1, 2)  # (batch, dim, time)
        pooled = torch.relu(self.conv(x)).amax(dim=2)
        return self.head(self.dropout(pooled))


class StackedCNNStudent(_Student):
    """Stacked bias-free width-3 convolutions with ReLUs (dilated as given), max over time. Padding embeds to
    zero and no layer has a bias, so, as in CNNStudent, batch padding behaves like the convolutions' own zero
    padding and the answer does not depend on it."""

    def __init__(self, remap, vocab, num_labels, dim=128, filters=(128, 256), dilations=(1, 1), width=3, dropout=0.2):
        super().__init__(remap, vocab, dim)
        widths = (dim, *filters)
        self.convs = nn.ModuleList(
            nn.Conv1d(widths[k], widths[k + 1], width, dilation=d, padding=d * (width - 1), bias=False) for k, d in enumerate(dilations)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters[-1], num_labels)

    def pool(self, x):
        """(batch, dim, time) embeddings -> (batch, filters) features."""
        for conv in self.convs:
            x = torch.relu(conv(x))
        return x.amax(dim=2)

    def forward(self, input_ids, attention_mask):
        ids, _ = self.tokens(input_ids, attention_mask)
        return self.head(self.dropout(self.pool(self.embed(ids).transpose(1, 2))))


class SiameseCNNStudent(StackedCNNStudent):
    """A pair's two sentences encoded apart by one stack of convolutions. The input is tier 2's joined pair
    (BERT's [CLS] A [SEP] B [SEP], MPNet's <s> A </s></s> B </s>): the tokens between the opening one and the
    first separator id are the first sentence, the non-separator tokens after it the second (padding sits at the
    end, so counting real tokens finds the opening one). Each sentence is the sequence with the other's
    tokens embedded to zero, like padding (see StackedCNNStudent: the answer does not depend on them)."""

    def __init__(self, remap, vocab, num_labels, separator: int, dim=128, filters=(128, 128, 256), hidden=256, dropout=0.2):
        super().__init__(remap, vocab, num_labels, dim=dim, filters=filters, dilations=(1, 2, 4), dropout=dropout)
        self.register_buffer("separator", torch.tensor(separator), persistent=True)
        self.head = nn.Sequential(nn.Linear(4 * filters[-1], hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_labels))

    def forward(self, input_ids, attention_mask):
        ids, mask = self.tokens(input_ids, attention_mask)
        is_separator = (input_ids == self.separator).to(mask.dtype)
        after = torch.cumsum(is_separator, dim=1).clamp(max=1.0)  # 0 in the first sentence, 1 from its separator on
        # The template's opening token ([CLS], <s>) is left out, so that u and v are pooled over like tokens.
        past_opening = (torch.cumsum(attention_mask, dim=1) > 1).to(mask.dtype)
        first = ((1.0 - after) * past_opening).unsqueeze(-1) * mask
        second = (after - is_separator).unsqueeze(-1) * mask
        x = self.embed(ids)
        u, v = self.pool(torch.cat([x * first, x * second]).transpose(1, 2)).chunk(2)  # one pass over both halves
        return self.head(torch.cat([u, v, (u - v).abs(), u * v], dim=1))


class BagStudent(_Student):
    def __init__(self, remap, vocab, num_labels, dim=128, hidden=128, dropout=0.1):
        super().__init__(remap, vocab, dim)
        if vocab * (BIGRAM_MULTIPLIER + 1) >= 1 << 24:
            raise ValueError(f"a vocabulary of {vocab} ids is too large for the bigram hash (at most {(1 << 24) // (BIGRAM_MULTIPLIER + 1)})")
        self.bigrams = nn.Embedding(BIGRAM_BUCKETS, dim)
        nn.init.normal_(self.bigrams.weight, std=0.02)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_labels))

    def forward(self, input_ids, attention_mask):
        ids, mask = self.tokens(input_ids, attention_mask)
        uni = (self.embed(ids) * mask).sum(1)
        pair_mask = mask[:, 1:] * mask[:, :-1]
        bigram_ids = (ids[:, :-1] * BIGRAM_MULTIPLIER + ids[:, 1:]) % BIGRAM_BUCKETS
        bi = (self.bigrams(bigram_ids) * pair_mask).sum(1)
        count = mask.sum(1) + pair_mask.sum(1)
        return self.head((uni + bi) / count.clamp(min=1.0))


class BiLSTMStudent(_Student):
    def __init__(self, remap, vocab, num_labels, dim=128, hidden=150, dropout=0.1):
        super().__init__(remap, vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True, dropout=dropout)
        self.head = nn.Sequential(nn.Linear(2 * hidden, 200), nn.ReLU(), nn.Dropout(dropout), nn.Linear(200, num_labels))

    def forward(self, input_ids, attention_mask):
        ids, mask = self.tokens(input_ids, attention_mask)
        out, _ = self.lstm(self.embed(ids) * mask)  # (batch, time, 2 * hidden)
        hidden = self.lstm.hidden_size
        # Final states without packing (OpenVINO converts a plain LSTM sequence): the forward direction at each
        # input's last real token, the backward direction at position 0 (it has read only zeroed pads before).
        last = (attention_mask.sum(1) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, 2 * hidden)
        forward_final = out.gather(1, last)[:, 0, :hidden]  # gather before slicing: the converter mis-shapes the reverse
        backward_final = out[:, 0, hidden:]
        return self.head(torch.cat([forward_final, backward_final], dim=1))


def build(arch: str, remap: torch.Tensor, vocab: int, num_labels: int, dim: int = 128, separator: int | None = None) -> _Student:
    """`separator`: the tokenizer's separator id, which `siamese` splits a pair at (tokenization.TokenizerSpec's
    single_bounds[1])."""
    if arch == "siamese":
        if separator is None:
            raise ValueError("the siamese student needs the tokenizer's separator id")
        return SiameseCNNStudent(remap, vocab, num_labels, separator, dim=dim)
    builders = {
        "cnn": CNNStudent,
        "cnn2": StackedCNNStudent,
        "cnn3": lambda *a, **k: StackedCNNStudent(*a, filters=(128, 128, 256), dilations=(1, 2, 4), **k),
        "cnn4": lambda *a, **k: StackedCNNStudent(*a, filters=(128, 128, 128, 256), dilations=(1, 2, 4, 8), **k),
        "bow": BagStudent,
        "bilstm": BiLSTMStudent,
    }
    if arch not in builders:
        raise ValueError(f"unknown student {arch!r}; choose from {ARCHS}")
    return builders[arch](remap, vocab, num_labels, dim=dim)


def save_checkpoint(path, module: _Student, meta: dict) -> None:
    torch.save({"state": module.state_dict(), "meta": meta}, path)


def load_checkpoint(path) -> tuple[_Student, dict]:
    blob = torch.load(path, map_location="cpu", weights_only=False)
    meta = blob["meta"]
    separator = int(blob["state"]["separator"]) if "separator" in blob["state"] else None
    module = build(meta["arch"], blob["state"]["remap"], meta["vocab"], len(meta["labels"]), dim=meta["dim"], separator=separator)
    module.load_state_dict(blob["state"])
    return module, meta
