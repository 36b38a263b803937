"""Tiny random-weight BERT classifiers exported to OpenVINO IR through scripts/export.py (test fixtures)."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

LABELS = ["negative", "positive"]
CORPUS = [
    "a gorgeous film with a great cast",
    "dull and boring from start to finish",
    "the movie was great fun and the story moving",
    "an awful mess of a script , badly acted",
    "it is neither good nor bad , just long",
    "charming , funny and often affecting",
]


@functools.lru_cache(maxsize=None)
def make_tokenizer(vocab_size: int):
    """A WordPiece tokenizer trained on a few sentences: BERT's layout, no download.

    Cached: the trainer orders equal-count tokens differently from run to run, so two tiers share a
    tokenizer (byte-identical tokenizer.json) only when they get the same trained object.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)


def make_bert(folder: Path, seed: int, vocab_size: int = 120, labels=LABELS, logit_scale: float = 1.0, init_range: float = 0.3) -> Path:
    """A 2-layer, hidden-32 BERT classifier with random weights, saved in transformers format.

    A wide init (0.3, not 0.02) makes the [CLS] state depend on the input, so confidences spread over
    (0.5, 1) and thresholds matter.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_tokenizer(vocab_size)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, initializer_range=init_range, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(logit_scale)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def export_ir(torch_folder: Path, ir_folder: Path) -> Path:
    import export

    return export.export_transformer(torch_folder, ir_folder)


def assemble_cascade(folder: Path, tier1_ir: Path, tier2_ir: Path, **settings) -> Path:
    """A cascade folder: tier1/, tier2/ and cascade.json."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copytree(tier1_ir, folder / "tier1")
    shutil.copytree(tier2_ir, folder / "tier2")
    cascade = {"task": "tiny", "threshold": 0.8, **settings}
    (folder / "cascade.json").write_text(json.dumps(cascade))
    return folder
