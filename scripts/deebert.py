#!/usr/bin/env python
"""DeeBERT, the early-exit baseline (Xin et al., 2020), on a fine-tuned classifier: train its off-ramps, export
one OpenVINO stage per layer and quantize each to INT8.

DeeBERT trains in two stages: the backbone and its final classifier first (that is the cascade's last tier, from
train_tier2.py or any fine-tuned BERT or MPNet classifier: --model), then only the off-ramps, on the frozen
model. Since the backbone is frozen, the second stage reads each layer's pooled vector once and trains every
ramp on them (cross-entropy on the gold labels); each ramp keeps its best epoch on dev (by --metric). The stages
(early_exit_model.py) are then exported and quantized with NNCF, each calibrated on the inputs the stages before
it produce. `tango_edge.early_exit` runs the folder; `tango-edge calibrate --early-exit DIR` compares it with the
cascade.

Example:
    python scripts/deebert.py --model build/sst2-mpnet/tier2_torch/best --train ../shared/data/sst2/train.tsv \\
        --dev ../shared/data/sst2/dev.tsv --output build/sst2-mpnet/deebert
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import _common
import early_exit_model as eem
import train_tier2
from _common import log
from export import copy_tokenizer_files

from tango_edge.data import read_tsv
from tango_edge.early_exit import EARLY_EXIT_FILE, FIRST_INPUTS, LATER_INPUTS, stage_file
from tango_edge.metrics import METRICS, metric_fn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the fine-tuned classifier (DeeBERT's first stage): a transformers folder")
    p.add_argument("--train", required=True, help="labelled TSV the off-ramps learn from")
    p.add_argument("--dev", required=True, help="labelled TSV for each ramp's best epoch (and the report of its metric)")
    p.add_argument("--text-columns", default="sentence", help="one column, or two comma-separated for pair tasks")
    p.add_argument("--label-column", default="label")
    p.add_argument("--metric", choices=METRICS, default="accuracy", help="what each ramp's best epoch maximises on dev (f1: MRPC, mcc: CoLA)")
    p.add_argument("--output", required=True)
    p.add_argument("--max-train", type=int, default=None, help="use at most this many training rows (seeded sample)")
    p.add_argument("--max-length", type=int, default=train_tier2.MAX_LENGTH, help="truncation while training the ramps")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="the stages' weights (INT8: NNCF post-training quantization per stage)")
    p.add_argument("--calibration-size", type=int, default=300, help="training inputs that calibrate INT8")
    return p.parse_args(argv)


def encode_rows(tokenizer, model, texts: list, max_length: int) -> list[tuple[list[int], list[int] | None]]:
    """(ids, token type ids) per text; type ids (zeros for single texts) only for a model that takes them, whose
    first stage declares that input."""
    ids, types = train_tier2.encode(tokenizer, texts, max_length, with_types=eem.takes_token_types(model))
    if types is None and eem.takes_token_types(model):
        types = [[0] * len(row) for row in ids]
    return list(zip(ids, types if types is not None else [None] * len(ids)))


def padded(rows, pad_id: int) -> dict:
    """A batch of (ids, type ids) rows as the model's keyword inputs, right-padded like the runtime pads."""
    ids, types = zip(*rows)
    return _common.model_inputs(torch, list(ids), pad_id, None if types[0] is None else list(types))


@torch.inference_mode()
def layer_features(model, rows, pad_id: int, batch_size: int = 64) -> np.ndarray:
    """(layers, rows, hidden): what each layer's ramp reads, for every row (length-sorted batches)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out = np.empty((eem.num_layers(model), len(rows), model.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        batch = padded([rows[i] for i in index], pad_id)
        states = eem.layer_states(model, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        for layer, hidden in enumerate(states):
            out[layer, index] = eem.pooled(model, hidden, batch["attention_mask"]).numpy()
    return out


def train_ramps(model, train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray, *, epochs: int, lr: float, batch_size: int, seed: int, metric: str = "accuracy") -> tuple[eem.Ramps, list[dict]]:
    """DeeBERT's second stage on precomputed features: every ramp trained at once, each keeping its best epoch."""
    torch.manual_seed(seed)
    ramps = eem.Ramps(model)
    count = len(ramps.out)
    if count == 0:  # one layer: its only exit is the model's head
        return ramps, []
    optimizer = torch.optim.Adam(ramps.parameters(), lr=lr)
    x, y = torch.from_numpy(train_x[:count]), torch.from_numpy(train_y)
    dx, dy = torch.from_numpy(dev_x[:count]), torch.from_numpy(dev_y)

    score, key = metric_fn(metric), f"dev_{metric}"

    def dev_scores() -> list[float]:
        with torch.no_grad():
            return [score(dev_y, ramps(layer, dx[layer]).argmax(-1).numpy(), model.config.num_labels) for layer in range(count)]

    best = [{"epoch": 0, key: a, "state": _ramp_state(ramps, layer)} for layer, a in enumerate(dev_scores())]
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        ramps.train()
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            loss = sum(torch.nn.functional.cross_entropy(ramps(layer, x[layer, batch]), y[batch]) for layer in range(count))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ramps.eval()
        scores = dev_scores()
        for layer, value in enumerate(scores):
            if value > best[layer][key]:
                best[layer] = {"epoch": epoch, key: value, "state": _ramp_state(ramps, layer)}
        log.info("epoch %d: dev %s per ramp %s", epoch, metric, " ".join(f"{a:.3f}" for a in scores))
    for layer, entry in enumerate(best):
        ramps.dense[layer].load_state_dict(entry["state"][0])
        ramps.out[layer].load_state_dict(entry["state"][1])
    return ramps, [{"layer": layer + 1, "epoch": e["epoch"], key: e[key]} for layer, e in enumerate(best)]


def _ramp_state(ramps: eem.Ramps, layer: int):
    return ({k: v.clone() for k, v in ramps.dense[layer].state_dict().items()}, {k: v.clone() for k, v in ramps.out[layer].state_dict().items()})


def export_stages(model, ramps: eem.Ramps, output: Path) -> list:
    """One FP32 OpenVINO model per layer (ov.Model objects, also saved as stageNN.xml)."""
    import openvino as ov

    hidden = model.config.hidden_size
    first = FIRST_INPUTS[: 3 if eem.takes_token_types(model) else 2]
    stages = []
    for index in range(eem.num_layers(model)):
        module = eem.stage(model, ramps, index).eval()
        ones = torch.ones((2, 8), dtype=torch.long)
        if index == 0:
            example = {name: ones if name != "token_type_ids" else torch.zeros_like(ones) for name in first}
            inputs = [(name, [-1, -1], ov.Type.i64) for name in first]
        else:
            example = {LATER_INPUTS[0]: torch.randn(2, 8, hidden), LATER_INPUTS[1]: ones}
            inputs = [(LATER_INPUTS[0], [-1, -1, hidden], ov.Type.f32), (LATER_INPUTS[1], [-1, -1], ov.Type.i64)]
        with torch.no_grad():
            converted = ov.convert_model(module, example_input=example, input=inputs)
        for port, (name, _, _) in zip(converted.inputs, inputs):
            port.get_tensor().set_names({name})
        converted.outputs[0].get_tensor().set_names({"layer_output"})
        converted.outputs[1].get_tensor().set_names({"logits"})
        ov.save_model(converted, output / stage_file(index), compress_to_fp16=False)
        stages.append(converted)
    return stages


def quantize_stages(stages: list, calibration: list[dict], output: Path) -> None:
    """NNCF INT8 per stage, each calibrated on the inputs its predecessors (FP32) produce; saved over the FP32."""
    import nncf
    import openvino as ov

    from tango_edge.tier import ov_core

    inputs = calibration  # the first stage's inputs, one dict per calibration row (batch 1)
    for index, stage in enumerate(stages):
        compiled = ov_core().compile_model(stage, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        quantized = nncf.quantize(stage, nncf.Dataset(inputs), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(inputs))
        ov.save_model(quantized, output / stage_file(index), compress_to_fp16=False)
        outputs = [compiled(item) for item in inputs]
        inputs = [{LATER_INPUTS[0]: out[0], LATER_INPUTS[1]: item["attention_mask"]} for out, item in zip(outputs, inputs)]
        log.info("stage %d/%d quantized", index + 1, len(stages))


def main(argv=None):
    args = parse_args(argv)
    _common.setup_logging()
    transformers = _common.require("transformers")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    columns = args.text_columns.split(",")
    model = eem.load_classifier(args.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    train, dev = read_tsv(args.train, columns, args.label_column), read_tsv(args.dev, columns, args.label_column)
    train_texts, train_labels = train.texts, train.labels
    if args.max_train and len(train_texts) > args.max_train:
        keep = sorted(np.random.default_rng(args.seed).choice(len(train_texts), args.max_train, replace=False).tolist())
        train_texts, train_labels = [train_texts[i] for i in keep], [train_labels[i] for i in keep]
    train_rows, dev_rows = encode_rows(tokenizer, model, train_texts, args.max_length), encode_rows(tokenizer, model, dev.texts, args.max_length)

    started = time.perf_counter()
    train_x, dev_x = layer_features(model, train_rows, tokenizer.pad_token_id), layer_features(model, dev_rows, tokenizer.pad_token_id)
    log.info("features of %d train and %d dev rows at %d layers in %.0f s", len(train_rows), len(dev_rows), len(train_x), time.perf_counter() - started)
    ramps, ramp_report = train_ramps(model, train_x, np.asarray(train_labels), dev_x, np.asarray(dev.labels), epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, metric=args.metric)
    torch.save(ramps.state_dict(), output / "ramps.pt")

    stages = export_stages(model, ramps, output)
    if args.precision == "int8":
        calibration = [{k: v.numpy() for k, v in padded([row], tokenizer.pad_token_id).items()} for row in train_rows[: args.calibration_size]]
        quantize_stages(stages, calibration, output)
    copy_tokenizer_files(Path(args.model), output)
    model.config.save_pretrained(output)
    spec = {"version": 1, "stages": [stage_file(i) for i in range(len(stages))], "precision": args.precision, "source": str(args.model), "ramps": ramp_report, "recipe": {k: getattr(args, k) for k in ("epochs", "lr", "batch_size", "seed", "max_train", "max_length", "calibration_size", "metric")}}
    (output / EARLY_EXIT_FILE).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    log.info("early-exit model (%d stages, %s) in %s; ramps' dev %s %s", len(stages), args.precision, output, args.metric, " ".join(f"{r[f'dev_{args.metric}']:.3f}" for r in ramp_report))


if __name__ == "__main__":
    main()
