#!/usr/bin/env python
"""Average the weights of second-tier runs fine-tuned from the same start (a greedy "model soup", Wortsman et
al. 2022).

Runs of train_tier2.py that differ only in --data-seed share the base model and the classifier head's
initialisation, so their weights can be averaged. Ingredients are taken in order of dev accuracy; each is kept
only if the average with it is at least as accurate on dev as the average without it. The result is one
model of the same size and speed.

Example:
    python scripts/average_tier2.py --models build/sst2/tier2_torch/best build/sst2/tier2_torch_b/best \\
        --dev ../shared/data/sst2/dev.tsv --output build/sst2/tier2_soup
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common
import sequence_classifier
from _common import log
from train_tier2 import encode, evaluate, takes_token_types

from tango_edge.data import read_tsv


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", required=True, help="transformers folders of runs from the same start")
    p.add_argument("--dev", required=True)
    p.add_argument("--text-columns", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    out = Path(args.output)
    _common.setup_logging(out / "average.log")
    torch = _common.require("torch")
    transformers = _common.require("transformers")
    torch.set_num_threads(_common.cpu_threads())

    tokenizer = transformers.AutoTokenizer.from_pretrained(args.models[0])
    dev = read_tsv(args.dev, args.text_columns.split(","), args.label_column)
    models = [sequence_classifier.load(m) for m in args.models]
    dev_encoded = encode(tokenizer, dev.texts, args.max_length, takes_token_types(models[0]))

    def accuracy(model) -> float:
        return evaluate(torch, model, dev_encoded, dev.labels, tokenizer.pad_token_id)

    if len({sequence_classifier.pooling_of(m) for m in models}) > 1:
        raise SystemExit("error: the runs pool differently (--pooling); only runs of one recipe can be averaged")
    scores = [accuracy(m) for m in models]
    for path, score in zip(args.models, scores):
        log.info("ingredient %s: dev accuracy %.4f", path, score)
    order = sorted(range(len(models)), key=lambda i: -scores[i])

    soup = models[order[0]]
    total = {k: v.clone() for k, v in soup.state_dict().items()}  # sum of the kept ingredients' weights
    kept, best = [order[0]], scores[order[0]]
    for i in order[1:]:
        weights = models[i].state_dict()
        candidate = {k: v + weights[k] if v.is_floating_point() else v for k, v in total.items()}
        soup.load_state_dict({k: v / (len(kept) + 1) if v.is_floating_point() else v for k, v in candidate.items()})
        score = accuracy(soup)
        log.info("with %s: dev accuracy %.4f (%s)", args.models[i], score, "kept" if score >= best else "dropped")
        if score >= best:
            total, best = candidate, score
            kept.append(i)
    soup.load_state_dict({k: v / len(kept) if v.is_floating_point() else v for k, v in total.items()})

    soup.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result = {"dev_accuracy": best, "kept": [args.models[i] for i in kept], "ingredients": dict(zip(args.models, scores))}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    log.info("averaged %d of %d runs: dev accuracy %.4f -> %s", len(kept), len(models), best, out)
    print(json.dumps({"dev_accuracy": best, "kept": len(kept)}))


if __name__ == "__main__":
    main()
