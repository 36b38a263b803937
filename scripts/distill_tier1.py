#!/usr/bin/env python
"""Distil a first-tier student (cnn, bow or bilstm; see students.py) from the second tier's logits.

The student fits the teacher's logits with MSE (Tang et al. 2019) on the training sentences plus augmented
ones, all labelled by the exported tier 2 in OpenVINO (label_teacher.py). It reads the teacher's WordPiece
ids (one tokenization at run time), keeps the ids its corpus uses, and can start from the teacher's word
embeddings reduced by PCA. It evaluates an exponential moving average of the weights on dev every half epoch
and keeps the best.

Example:
    python scripts/distill_tier1.py --arch cnn --texts build/sst2/distill.txt --logits build/sst2/distill.logits.npy \\
        --dev ../shared/data/sst2/dev.tsv --tokenizer build/sst2/tier2_int8 --init-embeddings build/sst2/tier2_torch/best \\
        --output build/sst2/tier1_cnn
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

import _common
import students
from _common import log

from tango_edge.data import read_tsv
from tango_edge.metrics import METRICS, metric_fn
from tango_edge.tier import read_labels
from tango_edge.tokenization import TextEncoder

DEFAULTS = {  # arch: (epochs, learning rate), for the ~1M-sentence SST-2 corpus of build_cascade.py
    "cnn": (3, 2e-3),  # dev accuracy peaks by epoch 2
    "cnn2": (3, 2e-3),
    "cnn3": (3, 2e-3),
    "cnn4": (3, 2e-3),
    "bow": (2, 3e-3),
    "bilstm": (1, 2e-3),  # slowest to train by far (~25 min per epoch here)
    "siamese": (3, 2e-3),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=students.ARCHS, default="cnn")
    p.add_argument("--texts", required=True, help="distillation corpus, one sentence per line (a pair: two, tab-separated)")
    p.add_argument("--logits", required=True, help="teacher logits for --texts (.npy)")
    p.add_argument("--dev", required=True, help="labelled TSV for model selection")
    p.add_argument("--text-columns", default="sentence", help="dev's text column, or two comma-separated for pair tasks")
    p.add_argument("--label-column", default="label")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="what dev selection maximises (f1: MRPC, mcc: CoLA)")
    p.add_argument("--tokenizer", required=True, help="the tier-2 folder: its tokenizer.json and config.json labels")
    p.add_argument("--init-embeddings", default=None, help="transformers folder whose word embeddings initialise the student's")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--min-count", type=int, default=2, help="keep WordPiece ids seen at least this often")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ema", type=float, default=0.999, help="decay of a weight average evaluated and saved (0: raw weights)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--output", required=True)
    return p.parse_args(argv)


def build_remap(corpus_ids: list[list[int]], vocab_size: int, min_count: int, keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """remap[wordpiece id] -> small id (0 = padding, 1 = unknown) and the kept wordpiece ids in small-id order."""
    counts = np.bincount(np.fromiter((i for ids in corpus_ids for i in ids), dtype=np.int64), minlength=vocab_size)
    kept = sorted(set(np.flatnonzero(counts >= min_count).tolist()) | set(keep))
    remap = np.ones(vocab_size, dtype=np.int64)  # unknown
    remap[kept] = np.arange(2, 2 + len(kept))
    return remap, np.asarray(kept)


def pca_embeddings(model_dir: str, kept: np.ndarray, dim: int) -> np.ndarray:
    from safetensors.numpy import load_file

    weights = next(v for k, v in load_file(str(Path(model_dir) / "model.safetensors")).items() if k.endswith("word_embeddings.weight"))
    rows = weights[kept].astype(np.float32)
    centred = rows - rows.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:dim].T
    projected = projected / projected.std() * 0.1
    if projected.shape[1] < dim:  # a student wider than the teacher's embeddings: the extra columns start at zero
        projected = np.pad(projected, ((0, 0), (0, dim - projected.shape[1])))
    return projected


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    _common.setup_logging(out / "distill.log")
    torch = _common.require("torch")
    torch.set_num_threads(_common.cpu_threads())
    _common.seed_everything(args.seed)
    epochs, lr = DEFAULTS[args.arch]
    epochs, lr = args.epochs or epochs, args.lr or lr

    encoder = TextEncoder(Path(args.tokenizer) / "tokenizer.json", args.max_length)
    labels = read_labels(Path(args.tokenizer))
    texts = _common.read_corpus(args.texts)
    targets = torch.tensor(np.load(args.logits), dtype=torch.float32)
    if len(texts) != len(targets):
        raise SystemExit(f"error: {len(texts)} texts but {len(targets)} logits")
    train_ids = [e.ids for e in encoder.encode(texts)]
    dev = read_tsv(args.dev, args.text_columns.split(","), args.label_column)
    dev_ids = [e.ids for e in encoder.encode(dev.texts)]
    vocab_size = encoder._tokenizer.get_vocab_size()
    specials = sorted(encoder.spec.special_ids - {encoder.pad_id})  # the tokenizer's own special tokens, padding aside
    remap, kept = build_remap(train_ids, vocab_size, args.min_count, specials)
    remap[encoder.pad_id] = 0
    small_vocab = 2 + len(kept)
    log.info("%s: %d sentences, vocabulary %d of %d ids, dim %d, %g epochs at lr %g", args.arch, len(texts), small_vocab, vocab_size, args.dim, epochs, lr)

    separator = (encoder.spec.single_bounds or (None, None))[1]
    if args.arch == "siamese" and (len(args.text_columns.split(",")) != 2 or separator is None):
        raise SystemExit("error: the siamese student reads sentence pairs split at the tokenizer's separator: give two --text-columns and a BERT- or RoBERTa-style tokenizer")
    model = students.build(args.arch, torch.from_numpy(remap), small_vocab, len(labels), dim=args.dim, separator=separator)
    if args.init_embeddings:
        with torch.no_grad():
            model.embed.weight[2:] = torch.from_numpy(pca_embeddings(args.init_embeddings, kept, args.dim))
            model.embed.weight[0].zero_()
    log.info("parameters: %d (embeddings %d)", sum(p.numel() for p in model.parameters()), model.embed.weight.numel())

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    rng = random.Random(args.seed)
    lengths = [len(x) for x in train_ids]
    steps_per_epoch = (len(train_ids) + args.batch_size - 1) // args.batch_size
    total = int(steps_per_epoch * epochs)
    warmup = max(0.1, 2 / total)  # OneCycleLR divides by zero when its warm-up is a single step
    if warmup < 0.5:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total, pct_start=warmup)
    else:  # a smoke run of a few steps: a constant rate
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    batches = []
    while len(batches) < total:
        batches.extend(_common.length_bucketed_batches(lengths, args.batch_size, rng))
    # The weights evaluated and saved: an exponential moving average of the trained ones, or those themselves.
    # Parameters only: the remap buffer holds ids, which must not be averaged.
    averaged, average_decay = _common.weight_average(model, args.ema, total)
    kept = averaged.module if averaged is not None else model
    meta = {"arch": args.arch, "vocab": small_vocab, "dim": args.dim, "labels": labels, "tokenizer_dir": str(Path(args.tokenizer).resolve()), "max_length": args.max_length}
    best, history, started = -1.0, [], time.perf_counter()
    model.train()
    for step in range(1, total + 1):
        idx = batches[step - 1]
        ids, mask = _common.collate(torch, [train_ids[i] for i in idx], encoder.pad_id)
        loss = torch.nn.functional.mse_loss(model(ids, mask), targets[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(model)
        if step % max(1, steps_per_epoch // 2) == 0 or step == total:  # a corpus of one batch: every step
            score = evaluate(torch, kept, dev_ids, dev.labels, encoder.pad_id, args.metric, len(labels))
            history.append({"step": step, "epoch": round(step / steps_per_epoch, 2), "loss": round(loss.item(), 4), f"dev_{args.metric}": score, "seconds": round(time.perf_counter() - started)})
            log.info("%s step %d/%d (epoch %.2f) loss %.4f dev %s %.4f", args.arch, step, total, step / steps_per_epoch, loss.item(), args.metric, score)
            if score > best:
                best = score
                students.save_checkpoint(out / "student.pt", kept, meta)
    (out / "result.json").write_text(json.dumps({"arch": args.arch, "metric": args.metric, f"best_dev_{args.metric}": best, "epochs": epochs, "lr": lr, "ema": average_decay, "batch_size": args.batch_size, "corpus": len(texts), "history": history, **{k: v for k, v in meta.items() if k != "labels"}}, indent=2))
    log.info("%s done: best dev %s %.4f -> %s", args.arch, args.metric, best, out / "student.pt")


def evaluate(torch, model, dev_ids, dev_labels, pad_id, metric: str, num_classes: int, batch_size=256) -> float:
    model.eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(dev_ids), batch_size):
            ids, mask = _common.collate(torch, dev_ids[start : start + batch_size], pad_id)
            predicted += model(ids, mask).argmax(-1).tolist()
    model.train()
    return metric_fn(metric)(dev_labels, predicted, num_classes)


if __name__ == "__main__":
    main()
