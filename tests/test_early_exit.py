"""The early-exit baseline (DeeBERT): off-ramp training, per-layer OpenVINO stages, the entropy sweep, and its
column in `tango-edge calibrate`, on tiny BERT and MPNet classifiers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tiny_models
from test_scripts import SCRIPTS, write_task
from tango_edge.cli import main
from tango_edge.early_exit import EarlyExitModel, entropy
from tango_edge.routing import early_exit_curve, exit_layers

# Three layers: a middle stage both takes and returns hidden states (a name would find its input first).
MAKERS = {"bert": lambda folder: tiny_models.make_bert(folder, seed=2, layers=3), "mpnet": lambda folder: tiny_models.make_mpnet(folder, seed=4, layers=3)}


def run_deebert(model, task, output, *extra):
    command = [sys.executable, str(SCRIPTS / "deebert.py"), "--model", str(model), "--train", str(task / "train.tsv"), "--dev", str(task / "dev.tsv"), "--output", str(output), "--epochs", "2", *extra]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return output


@pytest.fixture(scope="session")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("ee_task"), n_train=64, n_dev=40)


@pytest.fixture(scope="session", params=sorted(MAKERS))
def fp32_early_exit(request, task, tmp_path_factory):
    """(torch classifier folder, its FP32 early-exit folder) for a tiny BERT and a tiny MPNet."""
    root = tmp_path_factory.mktemp(f"ee_{request.param}")
    model = MAKERS[request.param](root / "torch")
    return model, run_deebert(model, task, root / "early_exit", "--precision", "fp32")


def classifier_logits(model_dir, texts):
    import torch
    import transformers

    sys.path.insert(0, str(SCRIPTS))
    import sequence_classifier

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = sequence_classifier.load(str(model_dir)).eval()
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()


def test_every_stage_together_is_the_fine_tuned_classifier(fp32_early_exit, task):
    model_dir, folder = fp32_early_exit
    texts = [line.split("\t")[0] for line in (task / "dev.tsv").read_text().splitlines()[1:]]
    early = EarlyExitModel(folder, max_length=128)
    layers = early.layer_logits(early.encoder.encode(texts), batch_size=8)
    assert layers.shape == (3, len(texts), 2)
    np.testing.assert_allclose(layers[-1], classifier_logits(model_dir, texts), atol=1e-4)
    spec = json.loads((folder / "early_exit.json").read_text())
    assert spec["stages"] == ["stage01.xml", "stage02.xml", "stage03.xml"] and len(spec["ramps"]) == 2


def test_inputs_stop_at_the_first_layer_below_the_entropy_threshold(fp32_early_exit, task):
    _, folder = fp32_early_exit
    texts = [line.split("\t")[0] for line in (task / "dev.tsv").read_text().splitlines()[1:]]
    early = EarlyExitModel(folder, max_length=128)
    layers = early.layer_logits(early.encoder.encode(texts), batch_size=8)
    entropies = entropy(layers)
    assert entropies.shape == (3, len(texts)) and (entropies >= 0).all() and (entropies <= np.log(2) + 1e-9).all()
    never, always = early.predict(texts, 0.0), early.predict(texts, 10.0)
    assert (never[1] == 3).all() and (never[0] == layers[-1].argmax(-1)).all()
    assert (always[1] == 1).all() and (always[0] == layers[0].argmax(-1)).all()
    middle = float(np.median(entropies[0]))  # about half the inputs leave at layer 1
    classes, exits = early.predict(texts, middle)
    expected = exit_layers(entropies, middle)
    assert 0 < (exits == 1).sum() < len(texts)
    assert (exits == expected + 1).all()
    assert (classes == layers[expected, np.arange(len(texts))].argmax(-1)).all()


@pytest.fixture(scope="session")
def int8_early_exit(task, tmp_path_factory):
    """An INT8 early-exit model of tiny_cascade's last tier (tier b: the tiny BERT of seed 2)."""
    root = tmp_path_factory.mktemp("ee_int8")
    return run_deebert(tiny_models.make_bert(root / "torch", seed=2), task, root / "early_exit", "--calibration-size", "16")


def test_int8_stages_load_and_answer(int8_early_exit):
    assert json.loads((int8_early_exit / "early_exit.json").read_text())["precision"] == "int8"
    early = EarlyExitModel(int8_early_exit, max_length=128)
    classes, exits = early.predict(["a gorgeous film", "dull"], 0.3)
    assert classes.shape == exits.shape == (2,) and set(exits.tolist()) <= {1, 2}


def test_train_ramps_learns_each_layers_features():
    sys.path.insert(0, str(SCRIPTS))
    import deebert

    from transformers import BertConfig, BertForSequenceClassification

    rng = np.random.default_rng(0)
    config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    labels = rng.integers(0, 2, 600)
    # Layer 1's features carry the label in one direction, layer 2's carry nothing.
    features = rng.normal(size=(3, 600, 16)).astype(np.float32)
    features[0, :, 3] += np.where(labels == 1, 2.0, -2.0)
    ramps, report = deebert.train_ramps(model, features[:, :500], labels[:500], features[:, 500:], labels[500:], epochs=10, lr=3e-3, batch_size=64, seed=0)
    assert [r["layer"] for r in report] == [1, 2]
    assert report[0]["dev_accuracy"] > 0.9
    assert report[1]["dev_accuracy"] < 0.75
    _, by_mcc = deebert.train_ramps(model, features[:, :500], labels[:500], features[:, 500:], labels[500:], epochs=10, lr=3e-3, batch_size=64, seed=0, metric="mcc")
    assert by_mcc[0]["dev_mcc"] > 0.8 and by_mcc[1]["dev_mcc"] < 0.5 and "dev_accuracy" not in by_mcc[0]


def test_early_exit_curve_prices_each_input_up_to_its_exit_layer():
    # 3 layers, 4 inputs; entropies chosen so the thresholds are easy to read.
    entropies = np.array([[0.1, 0.5, 0.6, 0.6], [0.6, 0.2, 0.6, 0.6], [0.6, 0.6, 0.6, 0.6]])
    logits = np.zeros((3, 4, 2))
    logits[0, :, 1] = [1, 1, -1, -1]  # layer 1 says 1, 1, 0, 0
    logits[1, :, 1] = [1, -1, 1, 1]  # layer 2 says 1, 0, 1, 1
    logits[2, :, 1] = [1, 1, 1, -1]  # layer 3 says 1, 1, 1, 0
    gold = np.array([1, 0, 1, 0])
    curve = early_exit_curve(logits, entropies, gold, [1.0, 2.0, 4.0], "accuracy", 2)
    at = lambda s: int(np.flatnonzero(curve.thresholds == s)[0]) if s in curve.thresholds else None
    never = at(0.0)
    assert curve.metric[never] == 0.75 and curve.mean_exit[never] == 3 and curve.seconds[never] == 7.0
    # just above 0.2: input 0 leaves at layer 1 (cost 1), input 1 at layer 2 (cost 3), the rest at 3 (cost 7)
    i = int(np.searchsorted(curve.thresholds, 0.2, side="right"))
    assert exit_layers(entropies, curve.thresholds[i]).tolist() == [0, 1, 2, 2]
    assert curve.seconds[i] == pytest.approx((1 + 3 + 7 + 7) / 4) and curve.metric[i] == 1.0
    assert curve.cheapest_meeting(1.0) == i
    assert curve.cheapest_meeting(1.01) is None


def test_calibrate_adds_deebert_to_table_2_at_batch_size_1_and_tuned(tiny_cascade, int8_early_exit, task, tmp_path, capsys):
    out = tmp_path / "out.json"
    args = ["calibrate", "--models", str(tiny_cascade), "--data", str(task / "dev.tsv"), "--json", str(out), "--rounds", "1", "--no-write", "--target", "0.95", "--early-exit", str(int8_early_exit)]
    try:
        import matplotlib  # noqa: F401

        args += ["--plots", str(tmp_path / "plots")]
    except ImportError:
        pass
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "DeeBERT (batch 1)" in printed and "batch size 1" in printed and "early exit" in printed
    results = json.loads(out.read_text())
    early = results["early_exit"]
    assert early["layers"] == 2 and len(early["layer_metrics"]) == 2
    assert set(early["table"]) == set(results["table2"]) == set(results["table2_batch1"]) == {"0.99", "0.98", "0.95"}
    for target, entry in early["table"].items():
        assert entry is not None and entry["metric"] >= float(target) * results["last_metric"] - 1e-12
        assert 1.0 <= entry["mean_exit_layer"] <= 2.0 and entry["measured_seconds"] > 0
    assert len(early["timing"]["stage_seconds"]) == 2 and len(early["sweep"]) >= 2


def test_calibrate_refuses_an_early_exit_model_with_other_labels(tiny_cascade, int8_early_exit, task, tmp_path, capsys):
    folder = shutil.copytree(int8_early_exit, tmp_path / "relabelled")
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["calibrate", "--models", str(tiny_cascade), "--data", str(task / "dev.tsv"), "--no-write", "--early-exit", str(folder)]) == 1
    assert "labels" in capsys.readouterr().err
