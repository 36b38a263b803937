"""`tango-edge evaluate` on the tiny cascades: the real cascade's metrics at its thresholds, next to each tier's."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

import tiny_models
from tango_edge import CascadeConfig
from tango_edge.tier import Tier
from tango_edge.cli import main
from tango_edge.evaluate import evaluate, metric_names
from tango_edge.profile import machine_summary
from tango_edge.metrics import accuracy
from tango_edge.routing import route, tier_outputs


def write_labelled(path, n: int, seed: int, pairs: bool = False):
    rng = random.Random(seed)
    words = " ".join(tiny_models.CORPUS).split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.choice([2, 4, 8, 16])))
    rows = [((sentence(), sentence()) if pairs else sentence(), rng.randint(0, 1)) for _ in range(n)]
    header = "quality\tsentence1\tsentence2\n" if pairs else "sentence\tlabel\n"
    body = "".join(f"{y}\t{t[0]}\t{t[1]}\n" if pairs else f"{t}\t{y}\n" for t, y in rows)
    path.write_text(header + body, encoding="utf-8")
    return [t for t, _ in rows], np.array([y for _, y in rows])


def test_metric_names_put_the_task_metric_first_and_f1_only_for_two_classes():
    assert metric_names("f1", 2) == ["f1", "accuracy", "mcc"]
    assert metric_names("accuracy", 3) == ["accuracy", "mcc"]


def test_a_threshold_of_0_is_the_first_tier_alone_and_one_above_1_the_last(tiny_cascade, tmp_path):
    data = tmp_path / "test.tsv"
    write_labelled(data, 70, seed=3)
    first = evaluate(tiny_cascade, str(data), thresholds=[0.0])
    assert first["cascade"]["answered_per_tier"] == [1.0, 0.0]
    # The cascade batches in its own order (other padding), so an input on the decision edge may flip.
    assert first["cascade"]["metrics"]["accuracy"] == pytest.approx(first["tiers"][0]["metrics"]["accuracy"], abs=1 / 70)
    last = evaluate(tiny_cascade, str(data), thresholds=[1.5])
    assert last["cascade"]["answered_per_tier"] == [0.0, 1.0]
    assert last["cascade"]["metrics"]["accuracy"] == pytest.approx(last["tiers"][1]["metrics"]["accuracy"], abs=1 / 70)
    assert last["cascade"]["share_of_last_tier"] == pytest.approx(1.0)
    assert first["tiers"] == last["tiers"]  # tiers alone do not depend on the thresholds


def test_three_tiers_at_stored_thresholds_agree_with_routing_each_tiers_logits(three_tier_cascade, tmp_path):
    data = tmp_path / "test.tsv"
    texts, gold = write_labelled(data, 90, seed=4)
    results = evaluate(three_tier_cascade, str(data))
    config = CascadeConfig.load(three_tier_cascade)
    assert results["thresholds"] == config.thresholds == [0.7, 0.8]
    assert results["machine"] == machine_summary()  # what the figures depend on, kept with them
    outputs = []
    for tier_config in config.tiers:
        tier = Tier(three_tier_cascade / tier_config.dir, max_length=config.max_length)
        outputs.append(tier_outputs(tier.logits(tier.encoder.encode(texts), 16), tier_config.temperature))
    final, reach, _ = route([c for c, _ in outputs], [p for _, p in outputs], config.thresholds)
    answered = -np.diff(np.append(reach, 0)) / len(texts)
    # Batches differ between the two runs (padding, order), so an input at a threshold's edge may go either way.
    assert results["cascade"]["metrics"]["accuracy"] == pytest.approx(accuracy(gold, final), abs=2 / len(texts))
    assert results["cascade"]["answered_per_tier"] == pytest.approx(answered.tolist(), abs=2 / len(texts))
    assert sum(results["cascade"]["answered_per_tier"]) == pytest.approx(1.0)
    assert [t["metrics"]["accuracy"] for t in results["tiers"]] == pytest.approx([accuracy(gold, p) for _, p in outputs], abs=2 / len(texts))


def test_the_command_on_pairs_reports_f1_first_and_writes_json(tiny_cascade, tmp_path, capsys):
    folder = tiny_models.assemble_cascade(tmp_path / "pairs", *[tiny_cascade / t for t in ("tier1", "tier2")], text_columns=["sentence1", "sentence2"], label_column="quality", metric="f1")
    data, out = tmp_path / "pairs.tsv", tmp_path / "out.json"
    _, gold = write_labelled(data, 40, seed=5, pairs=True)
    assert main(["evaluate", "--models", str(folder), "--data", str(data), "--json", str(out)]) == 0
    report = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert results["metric"] == "f1" and list(results["cascade"]["metrics"]) == ["f1", "accuracy", "mcc"]
    assert results["instances"] == len(gold) == 40
    assert "tier 1 alone" in report and "tier 2 alone" in report and "of the last tier's f1" in report


def test_the_command_takes_thresholds_and_names_a_missing_file(tiny_cascade, tmp_path, capsys):
    data, out = tmp_path / "test.tsv", tmp_path / "out.json"
    write_labelled(data, 30, seed=6)
    assert main(["evaluate", "--models", str(tiny_cascade), "--data", str(data), "--thresholds", "0", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["thresholds"] == [0.0] and results["cascade"]["answered_per_tier"] == [1.0, 0.0]
    capsys.readouterr()
    assert main(["evaluate", "--models", str(tiny_cascade), "--data", str(tmp_path / "nope.tsv")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: evaluation data {tmp_path / 'nope.tsv'} does not exist"


def test_f1_on_three_classes_is_a_one_line_error(tmp_path, capsys):
    three = {}
    for name, seed in (("x", 7), ("y", 8)):
        torch_dir = tiny_models.make_bert(tmp_path / f"{name}_torch", seed=seed, labels=["a", "b", "c"])
        three[name] = tiny_models.export_ir(torch_dir, tmp_path / f"{name}_ir")
    folder = tiny_models.assemble_cascade(tmp_path / "three_classes", three["x"], three["y"], metric="f1")
    data = tmp_path / "test.tsv"
    write_labelled(data, 10, seed=7)
    assert main(["evaluate", "--models", str(folder), "--data", str(data)]) == 1
    assert "metric f1 is binary F1 but the task has 3 classes" in capsys.readouterr().err


def test_a_row_the_cascade_cannot_classify_is_a_one_line_error(tiny_cascade, tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("sentence\tlabel\ngood words here\t1\n \t0\n", encoding="utf-8")
    assert main(["evaluate", "--models", str(tiny_cascade), "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    assert err[-1] == f"error: {data}: data row 2 cannot be classified (empty input); fix or drop it"
    assert not any("Traceback" in line for line in err)
