#!/usr/bin/env python
"""Export a tier to an OpenVINO IR folder in the cascade layout (openvino_model.xml/.bin, tokenizer, config.json).

Transformers go through optimum-intel (openvino.convert_model fails while tracing a transformers 5 BERT);
the small first-tier students through openvino.convert_model on their TorchScript-free torch module.

Examples:
    python scripts/export.py transformer --model build/sst2/tier2_torch/best --output build/sst2/tier2_fp32
    python scripts/export.py student --checkpoint build/sst2/tier1_cnn/student.pt --output build/sst2/tier1_cnn_fp32
    python scripts/export.py tokenizer --folder models/sst2/tier1
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import _common
import sequence_classifier
from _common import log

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export_transformer(model_dir: str | Path, output: str | Path) -> Path:
    """Export a transformers sequence classifier (local folder or hub id) to FP32 OpenVINO IR."""
    _common.require("torch")
    export_from_model = _common.require("optimum.exporters.openvino").export_from_model
    transformers = _common.require("transformers")
    output = Path(output)
    # From the torch model rather than the folder, so a mean-pooling head (sequence_classifier.py) is traced too.
    model = sequence_classifier.load(str(model_dir)).eval()
    export_from_model(model, output, task="text-classification")
    model.config.save_pretrained(output)
    transformers.AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(output)
    export_tokenizer(output)
    _keep_runtime_files(output)
    log.info("exported %s -> %s", model_dir, output)
    return output


def export_student(checkpoint: str | Path, output: str | Path) -> Path:
    """Export a distilled first-tier student (see scripts/students.py) to FP32 OpenVINO IR."""
    import openvino as ov
    import students

    torch = _common.require("torch")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    module, meta = students.load_checkpoint(checkpoint)
    module.eval()
    example = {"input_ids": torch.ones((2, 16), dtype=torch.long), "attention_mask": torch.ones((2, 16), dtype=torch.long)}
    with torch.no_grad():
        ov_model = ov.convert_model(module, example_input=example, input=[("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)])
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    ov.save_model(ov_model, output / "openvino_model.xml", compress_to_fp16=False)
    config = {"model_type": f"tango-student-{meta['arch']}", "id2label": {str(i): n for i, n in enumerate(meta["labels"])}, "label2id": {n: i for i, n in enumerate(meta["labels"])}, "student": meta}
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    copy_tokenizer_files(Path(meta["tokenizer_dir"]), output)
    export_tokenizer(output)
    log.info("exported student %s (%s) -> %s", checkpoint, meta["arch"], output)
    return output


def copy_tokenizer_files(source: Path, folder: Path) -> None:
    """The tokenizer files (TOKENIZER_FILES) that `source` has, copied into `folder`."""
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)


def export_tokenizer(folder: str | Path) -> Path:
    """Convert the folder's tokenizer to OpenVINO IR (openvino_tokenizer.xml) with openvino-tokenizers.

    The runtime tokenizes with it, about 3x faster than the Rust tokenizer here. Converted without
    truncation: the runtime truncates as tokenizer.json would, and flags the inputs it cut.
    """
    import openvino as ov

    convert = _common.require("openvino_tokenizers").convert_tokenizer
    transformers = _common.require("transformers")
    folder = Path(folder)
    ov.save_model(convert(transformers.AutoTokenizer.from_pretrained(str(folder))), folder / "openvino_tokenizer.xml")
    return folder / "openvino_tokenizer.xml"


def _keep_runtime_files(folder: Path) -> None:
    """Drop what the runtime never reads (optimum writes a few extra files)."""
    keep = {"openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_tokenizer.bin", "config.json", *TOKENIZER_FILES}
    for path in folder.iterdir():
        if path.is_file() and path.name not in keep:
            path.unlink()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True)
    t = sub.add_parser("transformer", help="a transformers sequence classifier (second tier, or a transformer first tier)")
    t.add_argument("--model", required=True, help="local folder or hub id")
    t.add_argument("--output", required=True)
    s = sub.add_parser("student", help="a distilled first-tier student checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--output", required=True)
    k = sub.add_parser("tokenizer", help="add openvino_tokenizer.xml to a tier folder that has a tokenizer")
    k.add_argument("--folder", required=True)
    args = parser.parse_args(argv)
    _common.setup_logging()
    if args.kind == "transformer":
        export_transformer(args.model, args.output)
    elif args.kind == "student":
        export_student(args.checkpoint, args.output)
    else:
        log.info("wrote %s", export_tokenizer(args.folder))


if __name__ == "__main__":
    main()
