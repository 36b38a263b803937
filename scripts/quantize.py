#!/usr/bin/env python
"""INT8 post-training quantization of a tier with NNCF, kept only if it costs at most --max-drop of the dev metric.

Measures the dev metric (--metric: accuracy, f1 or mcc) before and after in the tango-edge runtime. If plain
PTQ (performance preset) loses more than --max-drop, tries NNCF's remedies in order: the mixed preset, then
accuracy-aware quantization (which returns layers to float until the drop fits), and keeps the first that fits;
quantize.json records every attempt and what was kept.

Example:
    python scripts/quantize.py --model build/sst2/tier2_fp32 --calibration ../shared/data/sst2/train.tsv \\
        --dev ../shared/data/sst2/dev.tsv --transformer --output build/sst2/tier2_int8
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

import numpy as np

import _common
from _common import log

from tango_edge.data import read_tsv
from tango_edge.metrics import METRICS, metric_fn
from tango_edge.tier import MODEL_BIN, MODEL_XML, Tier

MAX_LENGTH = 128


def dev_score(folder: Path, texts: list, labels: list[int], metric: str) -> float:
    tier = Tier(folder, max_length=MAX_LENGTH)
    predictions = tier.logits(tier.encoder.encode(texts), 32).argmax(1)
    return metric_fn(metric)(labels, predictions, len(tier.labels))


def write_tier(ov_model, source: Path, output: Path) -> Path:
    """Save the model with the source tier's tokenizer and config files."""
    import openvino as ov

    output.mkdir(parents=True, exist_ok=True)
    # Float constants left (embeddings, norms) are stored in FP16 and widened on load: half the size on disk.
    ov.save_model(ov_model, output / MODEL_XML, compress_to_fp16=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in (MODEL_XML, MODEL_BIN):
            shutil.copy(path, output / path.name)
    return output


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="FP32 tier folder")
    p.add_argument("--calibration", required=True, help="TSV whose texts calibrate the activations")
    p.add_argument("--dev", required=True, help="labelled TSV for the before/after check")
    p.add_argument("--text-columns", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--subset", type=int, default=1000, help="calibration sentences (300 lost 0.9 point on the MiniLM tier 2, 1000 lost 0.3)")
    p.add_argument("--transformer", action="store_true", help="use NNCF's transformer model type (attention patterns)")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="the dev metric the drop is measured in (f1: MRPC, mcc: CoLA)")
    p.add_argument("--max-drop", type=float, default=0.005, help="largest accepted loss of the dev metric (0.005 = 0.5 point)")
    p.add_argument("--output", required=True)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    _common.setup_logging()
    nncf = _common.require("nncf")
    import openvino as ov

    source, output = Path(args.model), Path(args.output)
    columns = args.text_columns.split(",")
    dev = read_tsv(args.dev, columns, args.label_column)
    pool = read_tsv(args.calibration, columns, args.label_column).texts
    rng = random.Random(args.seed)
    candidates = [t for t in pool if len(str(t).split()) >= 4] or pool  # whole sentences, not 1-word phrases
    calibration_texts = rng.sample(candidates, min(args.subset, len(candidates)))

    tier = Tier(source, max_length=MAX_LENGTH)
    encoded = tier.encoder.encode(calibration_texts)
    calibration = nncf.Dataset(encoded, lambda enc: tier.inputs([enc]))
    dev_encoded = list(zip(tier.encoder.encode(dev.texts), dev.labels))
    validation = nncf.Dataset(dev_encoded, lambda item: tier.inputs([item[0]]))

    metric, score = args.metric, metric_fn(args.metric)
    fp32 = dev_score(source, dev.texts, dev.labels, metric)
    log.info("FP32 dev %s %.4f", metric, fp32)
    model_type = nncf.ModelType.TRANSFORMER if args.transformer else None
    attempts = []

    def try_variant(name, quantize):
        model = quantize(ov.Core().read_model(source / MODEL_XML))
        candidate = output.with_name(output.name + f".{name}")
        write_tier(model, source, candidate)
        value = dev_score(candidate, dev.texts, dev.labels, metric)
        attempts.append({"variant": name, f"dev_{metric}": value, "drop": fp32 - value, "size_mb": round((candidate / MODEL_BIN).stat().st_size / 1e6, 2)})
        log.info("%s: dev %s %.4f (drop %.4f)", name, metric, value, fp32 - value)
        return candidate, fp32 - value <= args.max_drop

    def validate(compiled, items):  # items is an iterable without len()
        pairs = [(label, int(np.argmax(compiled(tier.inputs([enc]))[0]))) for enc, label in items]
        return score([g for g, _ in pairs], [p for _, p in pairs], len(tier.labels)) if pairs else 0.0

    variants = [
        ("ptq", lambda m: nncf.quantize(m, calibration, model_type=model_type, subset_size=len(encoded))),
        ("ptq_mixed", lambda m: nncf.quantize(m, calibration, preset=nncf.QuantizationPreset.MIXED, model_type=model_type, subset_size=len(encoded))),
        ("accuracy_control", lambda m: nncf.quantize_with_accuracy_control(m, calibration, validation, validation_fn=validate, max_drop=args.max_drop, drop_type=nncf.DropType.ABSOLUTE, model_type=model_type, subset_size=len(encoded))),
    ]
    kept = None
    for name, quantize in variants:
        try:
            candidate, fits = try_variant(name, quantize)
        except Exception as exc:  # an NNCF remedy that fails on this graph must not cost the attempts before it
            log.warning("%s failed: %s: %s", name, type(exc).__name__, exc)
            continue
        if fits:
            kept = name
            break
    if not attempts:
        raise SystemExit("error: every quantization variant failed; see the warnings above")
    if kept is None:  # nothing fits: keep the most accurate attempt and say so
        kept = max(attempts, key=lambda a: a[f"dev_{metric}"])["variant"]
        log.warning("no variant kept the drop within %.3f; keeping %s", args.max_drop, kept)
    if output.exists():
        shutil.rmtree(output)
    output.with_name(output.name + f".{kept}").rename(output)
    for attempt in attempts:
        shutil.rmtree(output.with_name(output.name + f".{attempt['variant']}"), ignore_errors=True)
    report = {"metric": metric, f"fp32_dev_{metric}": fp32, "fp32_size_mb": round((source / MODEL_BIN).stat().st_size / 1e6, 2), "attempts": attempts, "kept": kept, "max_drop": args.max_drop, "calibration_sentences": len(encoded)}
    (output / "quantize.json").write_text(json.dumps(report, indent=2) + "\n")
    log.info("kept %s -> %s", kept, output)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
