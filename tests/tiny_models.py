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


def make_bert(folder: Path, seed: int, vocab_size: int = 120, labels=LABELS, logit_scale: float = 1.0, init_range: float = 0.3, layers: int = 2) -> Path:
    """A 2-layer (or `layers`), hidden-32 BERT classifier with random weights, saved in transformers format.

    A wide init (0.3, not 0.02) makes the [CLS] state depend on the input, so confidences spread over
    (0.5, 1) and thresholds matter.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_tokenizer(vocab_size)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, max_position_embeddings=128, initializer_range=init_range, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
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


def assemble_cascade(folder: Path, *tier_irs: Path, thresholds=None, legacy: bool = False, **settings) -> Path:
    """A cascade folder: tier1/ .. tierN/ and cascade.json (version 2; `legacy` writes a version 1 two-tier file)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for index, ir in enumerate(tier_irs, start=1):
        shutil.copytree(ir, folder / f"tier{index}")
    if legacy:
        assert len(tier_irs) == 2
        cascade = {"task": "tiny", "threshold": 0.8, **settings}
    else:
        thresholds = thresholds or [0.8] * (len(tier_irs) - 1)
        tiers = [{"dir": f"tier{i + 1}", "threshold": t} for i, t in enumerate(thresholds)] + [{"dir": f"tier{len(tier_irs)}"}]
        cascade = {"version": 2, "task": "tiny", "tiers": tiers, **settings}
    (folder / "cascade.json").write_text(json.dumps(cascade))
    return folder


@functools.lru_cache(maxsize=None)
def make_mpnet_tokenizer(vocab_size: int):
    """MPNet's tokenizer layout on a tiny vocabulary: <s> <pad> </s> <unk> first, an uncased WordPiece with
    [UNK] as its unknown token, <s> A </s> (RobertaProcessing), and a fixed padding to 128 tokens, as
    all-mpnet-base-v2's tokenizer.json has (the runtime must never pad to it)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "[UNK]", "<mask>"]
    tok.train_from_iterator(CORPUS * 5, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
    tok.enable_padding(pad_id=tok.token_to_id("<pad>"), pad_token="<pad>", length=128)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="[UNK]", pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=128)


def make_mpnet(folder: Path, seed: int, vocab_size: int = 120, labels=LABELS, layers: int = 2) -> Path:
    """A 2-layer (or `layers`), hidden-32 MPNet classifier with random weights (no token_type_ids input), saved in transformers format."""
    import torch
    from transformers import MPNetConfig, MPNetForSequenceClassification

    tokenizer = make_mpnet_tokenizer(vocab_size)
    config = MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, max_position_embeddings=130, initializer_range=0.3, pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(seed)
    MPNetForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
