"""Calibration: metrics, routings, threshold choice, baselines and temperature on tiny synthetic arrays with known
answers, then the command on the tiny cascade."""

from __future__ import annotations

import json
import random
import shutil
import sys

import numpy as np
import pytest

import tiny_models
from tango_edge import Cascade, CascadeConfig, TangoEdgeError
from tango_edge.calibrate import analyse, speedup_table, temperature_decision, write_choice
from tango_edge.routing import (
    SKIP_THRESHOLD,
    Costs,
    cascade_curve,
    choose_threshold,
    confusion_by_deferral,
    cut_points,
    fixes_by_confidence_decile,
    oracle_metric_by_deferral,
    oracle_order,
    random_metric_by_deferral,
    route,
    search_thresholds,
    smallest_deferral,
    threshold_for_cut,
    two_tier_reach,
)
from tango_edge.routing import tier_outputs as tier1_outputs
from tango_edge.temperature import fit_temperature, golden_section_minimize, nll, rankings_agree
from tango_edge.cli import main
from tango_edge.metrics import accuracy, confusion, f1, mcc, metric_fn

# ---- metrics -----------------------------------------------------------------------------------------------


def test_accuracy():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75


def test_binary_f1_of_class_1():
    # tp = 2, fp = 1, fn = 1 -> 2*2 / (2*2 + 1 + 1)
    assert f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(4 / 6)
    assert f1([0, 0], [0, 0]) == 0.0  # class 1 never gold nor predicted


def test_f1_refuses_more_than_two_classes():
    with pytest.raises(ValueError, match="binary"):
        f1([0, 1, 2], [0, 1, 2], num_classes=3)


def test_mcc_known_values():
    # tp = 1, tn = 2, fp = 0, fn = 1 -> (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3)
    assert mcc([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(2 / np.sqrt(12))
    assert mcc([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert mcc([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert mcc([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant prediction: undefined, reported as 0
    assert mcc([0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)  # K classes


def test_binary_mcc_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    tp = np.sum((gold == 1) & (pred == 1)); tn = np.sum((gold == 0) & (pred == 0))
    fp = np.sum((gold == 0) & (pred == 1)); fn = np.sum((gold == 1) & (pred == 0))
    expected = (tp * tn - fp * fn) / np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert mcc(gold, pred) == pytest.approx(expected)


def test_metric_fn_names():
    assert metric_fn("accuracy")([1], [1]) == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        metric_fn("auc")


# ---- routings ----------------------------------------------------------------------------------------------


def test_confusion_by_deferral_matches_brute_force_for_every_k():
    rng = np.random.default_rng(1)
    n, k_classes = 30, 3
    gold, pred1, pred2 = rng.integers(0, k_classes, n), rng.integers(0, k_classes, n), rng.integers(0, k_classes, n)
    order = rng.permutation(n)
    counts = confusion_by_deferral(order, pred1, pred2, gold, k_classes)
    assert counts.shape == (n + 1, k_classes, k_classes)
    for k in range(n + 1):
        routed = pred1.copy()
        routed[order[:k]] = pred2[order[:k]]
        np.testing.assert_array_equal(counts[k], confusion(gold, routed, k_classes))


def test_cut_points_keep_ties_together():
    assert cut_points(np.array([0.5, 0.6, 0.6, 0.9])).tolist() == [0, 1, 3, 4]


def test_threshold_for_cut_defers_exactly_k_under_the_runtime_rule():
    s = np.array([0.5, 0.6, 0.6, 0.9], dtype=np.float32)
    assert threshold_for_cut(s, 1) == float(np.float32(0.55))
    assert threshold_for_cut(s, 0) == float(s[0])  # defers none of these inputs
    assert threshold_for_cut(s, 4) == SKIP_THRESHOLD
    for k in (0, 1, 3, 4):
        assert int(np.sum(s < threshold_for_cut(s, k))) == k  # runtime: defer when confidence < threshold


def test_threshold_between_adjacent_float32_values_uses_the_upper_one():
    lower = np.float32(0.7)
    upper = np.nextafter(lower, np.float32(1))
    s = np.array([lower, upper], dtype=np.float32)
    threshold = threshold_for_cut(s, 1)
    assert threshold == float(upper) and int(np.sum(s < np.float32(threshold))) == 1


# Ten inputs, tier 1 wrong on the two least confident (0.55 and 0.6), tier 2 right everywhere.
CONF = np.array([0.95, 0.55, 0.9, 0.6, 0.7, 0.8, 0.65, 0.99, 0.85, 0.75], dtype=np.float32)
GOLD = np.ones(10, dtype=np.int64)
PRED1 = np.where(np.isin(np.arange(10), [1, 3]), 0, 1)
PRED2 = np.ones(10, dtype=np.int64)


@pytest.mark.parametrize(
    "required, deferred, threshold",
    [
        (0.99, 2, 0.625),  # both errors deferred: between 0.6 and 0.65
        (0.9, 1, 0.575),  # one error deferred is enough
        (0.8, 0, 0.55),  # tier 1 alone reaches it: nothing deferred
    ],
)
def test_choose_threshold_takes_the_lowest_deferral_meeting_the_target(required, deferred, threshold):
    curve = cascade_curve(CONF, PRED1, PRED2, GOLD, "accuracy", 2)
    choice = choose_threshold(curve, required)
    assert choice.deferred == deferred and choice.deferral_rate == deferred / 10
    assert choice.threshold == pytest.approx(threshold, abs=1e-6)
    assert int(np.sum(CONF < np.float32(choice.threshold))) == deferred
    assert choice.metric >= required


def test_choose_threshold_with_ties_defers_the_whole_tie():
    conf = np.array([0.6, 0.6, 0.9, 0.9], dtype=np.float32)
    pred1 = np.array([0, 1, 1, 1])  # only input 0 is wrong, but it ties with input 1
    curve = cascade_curve(conf, pred1, np.ones(4, int), np.ones(4, int), "accuracy", 2)
    choice = choose_threshold(curve, 1.0)
    assert choice.deferred == 2 and choice.deferral_rate == 0.5


def test_choose_threshold_returns_none_when_unreachable():
    curve = cascade_curve(CONF, PRED1, np.zeros(10, int), GOLD, "accuracy", 2)  # tier 2 always wrong
    assert choose_threshold(curve, 0.9) is None


def test_random_baseline_accuracy_is_exact_and_linear():
    by_k = random_metric_by_deferral(PRED1, PRED2, GOLD, "accuracy", 2)
    np.testing.assert_allclose(by_k, 0.8 + 0.2 * np.arange(11) / 10)
    assert smallest_deferral(by_k, 0.99) == 10  # random routing needs everything deferred for 99% here


def test_random_baseline_for_f1_is_a_seeded_average_with_exact_ends():
    rng = np.random.default_rng(2)
    gold, pred1, pred2 = rng.integers(0, 2, 40), rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    by_k = random_metric_by_deferral(pred1, pred2, gold, "f1", 2, draws=50, seed=7)
    assert by_k[0] == pytest.approx(f1(gold, pred1)) and by_k[-1] == pytest.approx(f1(gold, pred2))
    np.testing.assert_array_equal(by_k, random_metric_by_deferral(pred1, pred2, gold, "f1", 2, draws=50, seed=7))


def test_oracle_defers_fixable_errors_first_then_stops_at_the_error_count():
    gold = np.ones(10, int)
    pred1 = np.array([1, 0, 1, 0, 1, 1, 0, 1, 1, 1])  # wrong on 1, 3, 6
    pred2 = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1])  # fixes 1 and 6, not 3; breaks 8
    order = oracle_order(pred1, pred2, gold)
    assert set(order[:2]) == {1, 6} and order[2] == 3 and order[-1] == 8
    by_k = oracle_metric_by_deferral(pred1, pred2, gold, "accuracy", 2)
    np.testing.assert_allclose(by_k[:4], [0.7, 0.8, 0.9, 0.9])
    np.testing.assert_allclose(by_k[3:], 0.9)  # beyond the 3 errors it defers nothing more
    assert smallest_deferral(by_k, 0.9) == 2


# ---- costs -------------------------------------------------------------------------------------------------


def test_speedup_and_throughput_formulas():
    costs = Costs((0.001, 0.010), (64, 16))
    assert costs.speedup(two_tier_reach(0.0)) == pytest.approx(10.0)
    assert costs.speedup(two_tier_reach(0.1)) == pytest.approx(5.0)
    assert costs.speedup(two_tier_reach(1.0)) == pytest.approx(10 / 11)
    assert costs.throughput(two_tier_reach(0.1)) == pytest.approx(500.0)
    np.testing.assert_allclose(costs.speedup(two_tier_reach(np.array([0.0, 0.1]))), [10.0, 5.0])
    three = Costs((0.001, 0.004, 0.010), (64, 16, 8))  # tier 1 on all, tier 2 on half, tier 3 on a tenth
    assert three.per_instance([1.0, 0.5, 0.1]) == pytest.approx(0.001 + 0.002 + 0.001)
    assert three.pair().seconds == (0.001, 0.010)


def test_speedup_table_on_known_routings():
    logits1 = np.stack([np.zeros(10), np.log(CONF / (1 - CONF))], axis=1)  # softmax top prob = CONF, class 1
    logits1[[1, 3]] = logits1[[1, 3]][:, ::-1]  # the two least confident predict class 0 (wrong)
    analysis = analyse(logits1, PRED2, GOLD, "accuracy", 2)
    np.testing.assert_allclose(analysis.confidence, CONF, rtol=1e-5)
    table = speedup_table(analysis, Costs((0.001, 0.010), (64, 16)), [0.99, 0.9])
    assert table["0.99"]["cascade"] == {"deferral_rate": 0.2, "speedup": pytest.approx(10 / 3)}
    assert table["0.99"]["oracle"]["deferral_rate"] == 0.2
    assert table["0.99"]["random"]["deferral_rate"] == 1.0
    assert table["0.9"]["cascade"]["deferral_rate"] == 0.1 and table["0.9"]["random"]["deferral_rate"] == 0.5


# ---- temperature -------------------------------------------------------------------------------------------


def test_golden_section_finds_a_parabola_minimum():
    assert golden_section_minimize(lambda x: (x - 1.3) ** 2, -3, 3) == pytest.approx(1.3, abs=1e-4)
    assert golden_section_minimize(lambda x: x, -3, 3) == pytest.approx(-3, abs=1e-4)  # optimum at the edge


def test_nll_of_uniform_logits_is_log_k():
    assert nll(np.zeros((4, 3)), np.array([0, 1, 2, 0]), 1.0) == pytest.approx(np.log(3))


@pytest.mark.parametrize("true_t, classes", [(2.0, 2), (0.5, 2), (1.5, 3)])
def test_fit_temperature_recovers_the_generating_temperature(true_t, classes):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(20000, classes))
    probs = np.exp(logits / true_t)
    probs /= probs.sum(axis=1, keepdims=True)
    gold = (rng.random((20000, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    fitted = fit_temperature(logits, gold)
    assert fitted == pytest.approx(true_t, rel=0.06)
    assert nll(logits, gold, fitted) <= nll(logits, gold, 1.0)


def test_temperature_never_changes_the_binary_ranking_nor_any_argmax():
    logits = np.random.default_rng(4).normal(0, 2, size=(500, 2))
    conf1, pred_a = tier1_outputs(logits, 1.0)
    conf3, pred_b = tier1_outputs(logits, 3.0)
    assert rankings_agree(conf1, conf3)
    np.testing.assert_array_equal(pred_a, pred_b)


def test_temperature_can_reorder_multiclass_confidences():
    logits = np.array([[3.0, 3.0, 0.0], [0.5, 0.0, 0.0]])  # a near tie at the top vs a small clear margin
    conf_t1, _ = tier1_outputs(logits, 1.0)
    conf_cold, _ = tier1_outputs(logits, 0.1)
    assert conf_t1[0] > conf_t1[1] and conf_cold[0] < conf_cold[1]
    assert not rankings_agree(conf_t1, conf_cold)


def test_temperature_decision_keeps_t_on_a_tie_and_says_why():
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 2, 300)
    logits1 = rng.normal(0, 1, (300, 2)) + 4 * np.eye(2)[gold] * (rng.random((300, 1)) < 0.8)
    pred2 = np.where(rng.random(300) < 0.9, gold, 1 - gold)
    plain = analyse(logits1, pred2, gold, "accuracy", 2, 1.0)
    scaled = analyse(logits1, pred2, gold, "accuracy", 2, fit_temperature(logits1, gold))
    chosen, report = temperature_decision(plain, scaled, 0.99, True, (0.5, 0.4))
    assert report["deferral_with"] == report["deferral_without"]  # binary: same ranking, same curve
    assert report["kept"] and chosen is scaled and "binary" in report["reason"]
    chosen, report = temperature_decision(plain, None, 0.99, True, None)
    assert chosen is plain and report["fitted"] is None


# ---- Fig. 4 ------------------------------------------------------------------------------------------------


def test_fixes_by_confidence_decile_known_counts():
    conf = np.arange(20) / 20  # decile of input i is i // 2
    gold = np.ones(20, int)
    pred1 = np.ones(20, int); pred1[[0, 1, 19]] = 0  # tier-1 errors in deciles 0, 0, 9
    pred2 = np.ones(20, int); pred2[[10, 19]] = 0  # tier 2 breaks 10 (decile 5), fails to fix 19
    result = fixes_by_confidence_decile(conf, pred1, pred2, gold)
    assert result["fixed"] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert result["broken"] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert result["count"] == [2] * 10
    assert result["confidence_range"][0] == (0.0, 0.05)


def test_fixes_by_decile_with_uneven_counts_matches_ranges():
    conf = np.linspace(0, 1, 15)
    result = fixes_by_confidence_decile(conf, np.zeros(15, int), np.zeros(15, int), np.zeros(15, int))
    assert sum(result["count"]) == 15
    lows = [low for low, _ in result["confidence_range"]]
    assert lows == sorted(lows)


# ---- cascade.json, plots -----------------------------------------------------------------------------------


def test_write_choice_writes_version_2_keeping_machine_fields_only_if_the_file_had_them(tmp_path):
    (tmp_path / "cascade.json").write_text(json.dumps({"threshold": 0.8}))  # version 1
    write_choice(tmp_path, [0.7], [1.5], [0.25])
    raw = json.loads((tmp_path / "cascade.json").read_text())
    assert raw["version"] == 2 and raw["tiers"] == [{"dir": "tier1", "threshold": 0.7, "temperature": 1.5, "deferral_rate": 0.25}, {"dir": "tier2", "temperature": 1.0}]
    (tmp_path / "cascade.json").write_text(json.dumps({"threshold": 0.8, "tier1_batch_size": 32}))
    write_choice(tmp_path, [0.7], [1.0], [0.25])
    assert json.loads((tmp_path / "cascade.json").read_text())["tiers"][0]["batch_size"] == 32


def test_plots_without_matplotlib_name_the_install_command(monkeypatch):
    from tango_edge.plots import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(TangoEdgeError, match="pip install matplotlib"):
        require_matplotlib()


def test_target_outside_0_1_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--models", str(tmp_path), "--data", "x.tsv", "--target", "1.5"])
    assert exit_info.value.code == 2 and "(0, 1]" in capsys.readouterr().err


# ---- the command on the tiny cascade -----------------------------------------------------------------------


def labelled_rows(n: int, seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    words = " ".join(tiny_models.CORPUS).split()
    sentence = lambda: " ".join(rng.choice(words) for _ in range(rng.choice([2, 4, 8, 16])))
    return [(sentence(), sentence(), rng.randint(0, 1)) for _ in range(n)]


@pytest.fixture
def cascade_dir(tiny_cascade, tmp_path):
    return shutil.copytree(tiny_cascade, tmp_path / "cascade")


def test_calibrate_writes_the_threshold_the_runtime_then_reproduces(cascade_dir, tmp_path, capsys):
    rows = labelled_rows(80, seed=1)
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{a}\t{y}\n" for a, _, y in rows), encoding="utf-8")
    out, plots = tmp_path / "out.json", tmp_path / "plots"
    args = ["calibrate", "--models", str(cascade_dir), "--data", str(data), "--json", str(out), "--rounds", "1"]
    try:
        import matplotlib  # noqa: F401

        args += ["--plots", str(plots)]
    except ImportError:
        plots = None
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "Table 2" in captured.out and "Table 3" in captured.out
    assert "no tuning profile" in captured.err  # defaults in use, said once

    results = json.loads(out.read_text())
    chosen = results["chosen"]
    config = CascadeConfig.load(cascade_dir)
    assert config.thresholds == chosen["thresholds"] and [config.tiers[0].temperature] == chosen["temperatures"]
    assert config.tiers[0].deferral_rate == chosen["deferral_rates"][0] == chosen["reach"][1]
    assert chosen["metric"] >= 0.99 * results["last_metric"] - 1e-12
    assert set(results["table2"]) == {"0.99", "0.98"}
    assert results["instances"] == 80 and len(results["sweep"]) >= 2
    assert sum(results["deciles"]["count"]) == 80
    if plots is not None:
        assert sorted(p.name for p in plots.glob("*.png")) == ["fixes_by_confidence_decile.png", "metric_vs_speedup.png", "throughput_vs_metric.png"]

    with Cascade.from_dir(cascade_dir) as cascade:  # same batch sizes, same arithmetic: same deferrals
        cascade.predict([a for a, _, _ in rows])
        assert cascade.stats()["deferral_rate"] == pytest.approx(chosen["deferral_rates"][0], abs=1.5 / 80)


def test_calibrate_pair_task_with_f1_and_no_write(cascade_dir, tmp_path, capsys):
    config_path = cascade_dir / "cascade.json"
    raw = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**raw, "text_columns": ["sentence1", "sentence2"], "label_column": "quality", "metric": "f1"}))
    before = config_path.read_bytes()
    rows = labelled_rows(60, seed=2)
    data = tmp_path / "pairs.tsv"
    data.write_text("quality\tsentence1\tsentence2\n" + "".join(f"{y}\t{a}\t{b}\n" for a, b, y in rows), encoding="utf-8")
    out = tmp_path / "out.json"
    assert main(["calibrate", "--models", str(cascade_dir), "--data", str(data), "--json", str(out), "--rounds", "1", "--no-write", "--no-temperature", "--target", "0.95"]) == 0
    results = json.loads(out.read_text())
    assert config_path.read_bytes() == before
    assert results["written"] is None and results["metric"] == "f1"
    assert results["temperature"]["fitted"] is None and results["chosen"]["temperatures"] == [1.0]
    assert set(results["table2"]) == {"0.99", "0.98", "0.95"}
    assert "Table 2" in capsys.readouterr().out


def test_calibrate_reports_a_missing_column_in_one_line(cascade_dir, tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("text\tlabel\nhello\t1\n", encoding="utf-8")
    assert main(["calibrate", "--models", str(cascade_dir), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "no column(s) ['sentence']" in err and "Traceback" not in err


# ---- N tiers -----------------------------------------------------------------------------------------------


def test_route_answers_at_the_first_confident_tier_and_skips_above_one():
    conf = [np.array([0.9, 0.6, 0.6, 0.2]), np.array([0.1, 0.95, 0.5, 0.99])]
    preds = [np.array([0, 0, 0, 0]), np.array([1, 1, 1, 1]), np.array([2, 2, 2, 2])]
    final, reach, passed = route(conf, preds, [0.7, 0.9])
    assert final.tolist() == [0, 1, 2, 1] and reach.tolist() == [4, 3, 1] and passed.tolist() == [3, 1]
    final, reach, passed = route(conf, preds, [SKIP_THRESHOLD, 0.9])  # tier 1 skipped
    assert final.tolist() == [2, 1, 2, 1] and reach.tolist() == [0, 4, 2] and passed.tolist() == [4, 2]


def _brute_force_cheapest(conf, preds, gold, costs, required):
    """Every threshold pair from every distinct confidence (plus skip for tier 2), scored one by one."""
    best = None
    firsts = sorted(set(conf[0].tolist())) + [SKIP_THRESHOLD]
    seconds_ = sorted(set(conf[1].tolist())) + [SKIP_THRESHOLD]
    for t1 in firsts:
        for t2 in seconds_:
            final, reach, _ = route(conf, preds, [t1, t2])
            value = float(np.mean(final == gold))
            cost = float(costs.per_instance(reach / len(gold)))
            if value >= required - 1e-12 and (best is None or (cost, -value) < best):
                best = (cost, -value)
    return best


def test_three_tier_search_finds_the_cheapest_point_brute_force_finds():
    rng = np.random.default_rng(11)
    n = 60
    gold = rng.integers(0, 2, n)
    noisy = lambda accuracy: np.where(rng.random(n) < accuracy, gold, 1 - gold)
    preds = [noisy(0.7), noisy(0.85), noisy(0.95)]
    conf = [np.float32(rng.uniform(0.5, 1, n)) for _ in range(2)]
    costs = Costs((0.001, 0.004, 0.02), (64, 16, 8))
    search = search_thresholds(conf, preds, gold, "accuracy", 2, costs)
    for required in (0.8, 0.9, float(np.mean(preds[2] == gold))):
        point = search.best_meeting(required)
        want = _brute_force_cheapest(conf, preds, gold, costs, required)
        assert point is not None and want is not None
        assert (point.seconds, -point.metric) == pytest.approx(want)
        final, reach, _ = route(conf, preds, point.thresholds)  # the thresholds reproduce the point
        assert float(np.mean(final == gold)) == pytest.approx(point.metric) and costs.per_instance(reach / n) == pytest.approx(point.seconds)
    front = search.frontier()
    assert [p.seconds for p in front] == sorted(p.seconds for p in front)
    assert all(b.metric > a.metric for a, b in zip(front, front[1:]))


def test_three_tier_search_includes_the_exact_two_tier_cascade():
    rng = np.random.default_rng(12)
    n = 200
    gold = rng.integers(0, 2, n)
    preds = [np.where(rng.random(n) < a, gold, 1 - gold) for a in (0.75, 0.85, 0.93)]
    conf = [np.float32(rng.uniform(0.5, 1, n)) for _ in range(2)]
    costs = Costs((0.001, 0.004, 0.02), (64, 16, 8))
    search = search_thresholds(conf, preds, gold, "accuracy", 2, costs)
    required = 0.97 * float(np.mean(preds[2] == gold))
    pair = search.best_meeting(required, search.skips_middle())
    choice = choose_threshold(cascade_curve(conf[0], preds[0], preds[2], gold, "accuracy", 2), required)
    assert pair.thresholds[1] == SKIP_THRESHOLD and pair.reach[1] == 0.0
    assert pair.reach[2] == pytest.approx(choice.deferral_rate) and pair.metric == pytest.approx(choice.metric)
    assert search.best_meeting(required).seconds <= pair.seconds


def test_calibrate_three_tiers_writes_thresholds_the_runtime_reproduces(three_tier_cascade, tmp_path, capsys):
    rows = labelled_rows(120, seed=3)
    data = tmp_path / "dev.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{a}\t{y}\n" for a, _, y in rows), encoding="utf-8")
    out = tmp_path / "out.json"
    assert main(["calibrate", "--models", str(three_tier_cascade), "--data", str(data), "--json", str(out), "--rounds", "1", "--target", "0.95"]) == 0
    printed = capsys.readouterr().out
    assert "3-tier search" in printed and "tier 1 + last" in printed and "frontier" in printed
    results = json.loads(out.read_text())
    chosen, search = results["chosen"], results["search"]
    assert len(chosen["thresholds"]) == 2 and len(results["temperature"]["per_tier"]) == 2
    assert search["chosen"]["seconds"] <= search["first_and_last_only"]["seconds"]
    assert chosen["metric"] >= 0.95 * results["last_metric"] - 1e-12
    config = CascadeConfig.load(three_tier_cascade)
    assert config.thresholds == chosen["thresholds"] and [t.deferral_rate for t in config.tiers[:2]] == chosen["deferral_rates"]
    with Cascade.from_dir(three_tier_cascade) as cascade:  # same arithmetic: the same shares reach each tier
        cascade.predict([a for a, _, _ in rows])
        reach = [t["reach_rate"] if t["items"] else 0.0 for t in cascade.stats()["tiers"]]
    running = [k for k, t in enumerate(chosen["thresholds"] + [None]) if t is None or t <= 1.0]
    for k in running[1:]:
        assert reach[k] == pytest.approx(chosen["reach"][k], abs=1.5 / 120)
