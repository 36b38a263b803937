"""The tuner: its choice rule, round interleaving and summaries on synthetic figures, then one real --quick run."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest

import tiny_models
from tango_edge import Cascade, TangoEdgeError
from tango_edge.autotune import (
    QUICK_BATCH_SIZES,
    Candidate,
    Setting,
    candidate_batch_sizes,
    MAX_PASS_SENTENCES,
    candidate_streams,
    cascade_thresholds,
    choose_batch_size,
    choose_setting,
    choose_streams,
    format_report,
    pass_size,
    read_sample,
    tune_cascade_streams,
    within_tolerance,
)
from tango_edge.timing import measure_rounds, pass_texts, round_schedule, summarize
from tango_edge.cli import main
from tango_edge.config import CascadeConfig
from tango_edge.tier import Tier
from conftest import sentences
from tango_edge.profile import load_profile, profile_path


@pytest.fixture
def cascade_dir(tiny_cascade, tmp_path):
    """A private copy of the tiny cascade with a sample.txt, so other tests never see a profile or sample."""
    folder = shutil.copytree(tiny_cascade, tmp_path / "cascade")
    (folder / "sample.txt").write_text("\n".join(tiny_models.CORPUS * 10) + "\n", encoding="utf-8")
    return folder


# ---- the choice rule ---------------------------------------------------------------------------------------


def test_choose_batch_size_takes_the_fastest_when_nothing_is_close():
    assert choose_batch_size({1: 100.0, 8: 300.0, 32: 200.0}) == 8


def test_choose_batch_size_prefers_the_smallest_size_within_3_percent():
    # 4 is 2.4% below the fastest (8): equally fast within what the medians resolve, and fills sooner.
    assert choose_batch_size({1: 100.0, 2: 180.0, 4: 200.0, 8: 205.0, 16: 204.0}) == 4


def test_choose_batch_size_boundary_is_inclusive_at_exactly_3_percent():
    assert choose_batch_size({8: 97.0, 16: 100.0}) == 8
    assert choose_batch_size({8: 96.9, 16: 100.0}) == 16


def test_choose_batch_size_tolerance_zero_is_plain_argmax():
    assert choose_batch_size({4: 99.0, 8: 100.0}, tolerance=0.0) == 8


def test_choose_batch_size_rejects_no_candidates():
    with pytest.raises(ValueError):
        choose_batch_size({})


def test_within_tolerance_lists_the_near_best():
    assert sorted(within_tolerance({1: 50.0, 2: 98.0, 4: 100.0, 8: 96.0})) == [2, 4]


def test_choose_setting_takes_the_smallest_batch_then_the_fastest_streams():
    rates = {Setting(0, 8): 200.0, Setting(1, 8): 196.0, Setting(0, 16): 201.0, Setting(1, 4): 150.0}
    assert choose_setting(rates) == Setting(0, 8)
    # At one batch size, stream settings compete on speed alone.
    assert choose_setting({Setting(0, 8): 196.0, Setting(1, 8): 200.0}) == Setting(1, 8)


# ---- candidates, rounds, summaries -------------------------------------------------------------------------


def test_choose_streams_keeps_the_tiers_own_choice_unless_another_is_clearly_faster():
    assert choose_streams({1: 100.0, 2: 102.0}, preferred=1) == 1  # within 3%
    assert choose_streams({1: 100.0, 2: 120.0}, preferred=1) == 2
    assert choose_streams({0: 90.0, 1: 100.0, 2: 120.0}, preferred=0) == 2


def test_tune_cascade_streams_times_each_setting_of_a_later_tier_on_the_cascade(cascade_dir):
    settings = {"tiers": [{"batch_size": 4, "streams": 0}, {"batch_size": 4, "streams": 1}]}
    chosen, report = tune_cascade_streams(cascade_dir, settings, [0.8], 1, read_sample(cascade_dir), [0, 1], rounds=2, device="CPU", log=lambda _: None)
    rows = {row["streams"]: row for row in report["candidates"]}
    assert set(rows) == {0, 1} and chosen in rows and report["streams"] == chosen and report["tier"] == 2
    assert all(len(row["rates_per_s"]) == 2 and row["median_per_s"] > 0 for row in rows.values())
    assert chosen == choose_streams({s: row["median_per_s"] for s, row in rows.items()}, preferred=1)
    from tango_edge.routing import tier_outputs

    texts = pass_texts(read_sample(cascade_dir), MAX_PASS_SENTENCES)  # what each timed pass runs
    tier1 = Tier(cascade_dir / "tier1", max_length=CascadeConfig.load(cascade_dir).max_length)
    confidence, _ = tier_outputs(tier1.logits(tier1.encoder.encode(texts), 64))
    assert report["thresholds"] == [0.8] and report["reach_rate"] == pytest.approx(float((confidence < 0.8).mean()), abs=0.01)


def test_cascade_stage_defers_the_calibrated_share_of_the_sample(cascade_dir):
    """Without a recorded deferral rate the stored threshold is used; with one, the sample defers that share."""
    (cascade_dir / "sample.txt").write_text("\n".join(sentences(400, seed=7)) + "\n", encoding="utf-8")
    sample = read_sample(cascade_dir)
    config = CascadeConfig.load(cascade_dir)
    tiers = [Tier(cascade_dir / t.dir, max_length=config.max_length) for t in config.tiers]
    assert cascade_thresholds(config, tiers, sample, log=lambda _: None) == config.thresholds
    for rate in (0.1, 0.4):
        thresholds = cascade_thresholds(config.replace(deferral_rates=[rate]), tiers, sample, log=lambda _: None)
        with Cascade.from_dir(cascade_dir, thresholds=thresholds, use_profile=False) as cascade:
            cascade.predict(pass_texts(sample, MAX_PASS_SENTENCES))
            assert cascade.stats()["deferral_rate"] == pytest.approx(rate, abs=0.02)


def test_cascade_stage_sets_each_tier_of_three_at_its_share(three_tier_cascade):
    """Tier 1 passes on 40% of all inputs and tier 2 passes on 15% of all: each at its recorded share."""
    folder = three_tier_cascade
    (folder / "sample.txt").write_text("\n".join(sentences(600, seed=8)) + "\n", encoding="utf-8")
    sample = read_sample(folder)
    config = CascadeConfig.load(folder).replace(deferral_rates=[0.4, 0.15])
    tiers = [Tier(folder / t.dir, max_length=config.max_length) for t in config.tiers]
    thresholds = cascade_thresholds(config, tiers, sample, log=lambda _: None)
    with Cascade.from_dir(folder, thresholds=thresholds, use_profile=False) as cascade:
        texts = pass_texts(sample, MAX_PASS_SENTENCES)
        cascade.predict(texts)
        reach = [t["reach_rate"] for t in cascade.stats()["tiers"]]
    assert reach[0] == 1.0
    assert reach[1] == pytest.approx(0.4, abs=0.02) and reach[2] == pytest.approx(0.15, abs=0.02)


def test_candidate_batch_sizes_cover_the_defaults_and_quick_ones_do_not():
    """Powers of two from 1, through both default batch sizes; --quick's sizes are a subset avoiding the defaults,
    so a test can see a tuned profile applied."""
    from tango_edge.config import FIRST_TIER_BATCH_SIZE, LATER_TIER_BATCH_SIZE

    sizes = candidate_batch_sizes()
    assert sizes[0] == 1 and all(b == 2 * a for a, b in zip(sizes, sizes[1:]))
    assert {FIRST_TIER_BATCH_SIZE, LATER_TIER_BATCH_SIZE} <= set(sizes)
    quick = set(candidate_batch_sizes(quick=True))
    assert quick < set(sizes) and not quick & {FIRST_TIER_BATCH_SIZE, LATER_TIER_BATCH_SIZE}


def test_candidate_streams_on_two_cores_are_auto_1_2():
    assert candidate_streams(2) == [0, 1, 2]
    assert candidate_streams(1) == [0, 1]
    assert candidate_streams(8) == [0, 1, 2, 4, 8]
    assert candidate_streams(8, quick=True) == [0]


def test_round_schedule_times_every_candidate_once_per_round_in_shuffled_orders():
    candidates = list(range(8))
    schedule = round_schedule(candidates, rounds=6, seed=3)
    assert len(schedule) == 6
    assert all(sorted(order) == candidates for order in schedule)
    assert len({tuple(order) for order in schedule}) > 1  # not one fixed order
    assert schedule == round_schedule(candidates, rounds=6, seed=3)  # reproducible


def test_measure_rounds_medians_shrug_off_a_slow_spell():
    """A 10x slowdown during one round hits every candidate of that round; the medians ignore it."""
    true_rates = {Candidate("tier2", 0, 1): 100.0, Candidate("tier2", 0, 8): 300.0, Candidate("tier2", 0, 32): 295.0}
    passes: list = []

    def fake_pass(candidate):
        current_round = len(passes) // len(true_rates)
        passes.append(candidate)
        return true_rates[candidate] / (10.0 if current_round == 2 else 1.0)

    seen_rounds = []
    rates = measure_rounds(list(true_rates), fake_pass, rounds=5, seed=0, progress=lambda done, total: seen_rounds.append((done, total)))
    assert seen_rounds == [(r, 5) for r in range(1, 6)]
    for start in range(0, len(passes), 3):  # each block of passes is one round: every candidate once
        assert set(passes[start : start + 3]) == set(true_rates)
    medians = {c.setting: statistics.median(values) for c, values in rates.items()}
    assert medians == {c.setting: rate for c, rate in true_rates.items()}
    assert choose_setting(medians) == Setting(0, 8)  # the fastest; 32 is within 3% but larger


def test_measure_rounds_choice_prefers_smaller_size_when_close():
    true_rates = {Setting(0, 8): 295.0, Setting(0, 32): 300.0}
    rates = measure_rounds(list(true_rates), lambda s: true_rates[s], rounds=5)
    assert choose_setting({s: statistics.median(v) for s, v in rates.items()}) == Setting(0, 8)


def test_summarize_reports_median_and_relative_spread():
    summary = summarize([100.0, 50.0, 200.0, 100.0, 110.0])
    assert summary["median"] == 100.0
    assert summary["min"] == 50.0 and summary["max"] == 200.0
    assert summary["range_rel"] == pytest.approx(1.5)
    assert summary["iqr_rel"] == pytest.approx(0.10)  # quartiles 100 and 110
    assert summary["rounds"] == 5


def test_pass_size_covers_two_largest_batches_and_aims_at_a_short_pass():
    assert pass_size(rate=300.0, largest_batch=128, seconds=0.3) == 256  # slow tier: two batches of 128
    assert pass_size(rate=10_000.0, largest_batch=128, seconds=0.1) == 1000
    assert pass_size(rate=1e9, largest_batch=128, seconds=1.0, cap=2048) == 2048


def test_pass_texts_cycles_a_short_sample_reproducibly():
    texts = pass_texts(["a", "b", "c"], 7)
    assert len(texts) == 7 and set(texts) == {"a", "b", "c"}
    assert texts == pass_texts(["a", "b", "c"], 7)


# ---- sample.txt --------------------------------------------------------------------------------------------


def test_read_sample_skips_blank_lines(tmp_path):
    (tmp_path / "sample.txt").write_text("one\n\n  two  \n", encoding="utf-8")
    assert read_sample(tmp_path) == ["one", "two"]


def test_read_sample_tab_separated_lines_are_pairs(tmp_path):
    (tmp_path / "sample.txt").write_text("first\tsecond\nsingle\n", encoding="utf-8")
    assert read_sample(tmp_path) == [("first", "second"), "single"]


def test_read_sample_missing_says_what_to_write(tmp_path):
    with pytest.raises(TangoEdgeError, match=r"sample\.txt is missing.*one per line"):
        read_sample(tmp_path)


def test_read_sample_empty_is_an_error(tmp_path):
    (tmp_path / "sample.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TangoEdgeError, match="no sentences"):
        read_sample(tmp_path)


def test_autotune_without_sample_fails_with_one_line(tiny_cascade, tmp_path, capsys):
    folder = shutil.copytree(tiny_cascade, tmp_path / "no_sample")
    assert main(["autotune", "--models", str(folder), "--quick"]) == 1
    err = capsys.readouterr().err
    assert "sample.txt is missing" in err and "Traceback" not in err
    assert load_profile(folder)[0] is None


# ---- a real run ---------------------------------------------------------------------------------------------


def test_autotune_quick_writes_a_profile_the_cascade_then_uses(cascade_dir, capsys):
    assert main(["autotune", "--models", str(cascade_dir), "--quick", "--rounds", "2", "--json"]) == 0
    captured = capsys.readouterr()
    profile = json.loads(captured.out)  # stdout is the profile, nothing else
    assert "round 2/2" in captured.err  # progress on stderr

    settings = profile["settings"]["tiers"]
    assert len(settings) == 2 and all(t["batch_size"] in QUICK_BATCH_SIZES for t in settings)
    assert set(profile["key"]) == {"cpu", "cores", "openvino", "device", "models"}
    tiers = profile["measurements"]["tiers"]
    for index, name in enumerate(("tier1", "tier2")):
        rows = tiers[name]["candidates"]
        assert {row["batch_size"] for row in rows} == set(QUICK_BATCH_SIZES)
        assert all(len(row["rates_per_s"]) == 2 and row["median_per_s"] > 0 for row in rows)
        assert tiers[name]["chosen"] == settings[index]
    assert json.loads(profile_path(cascade_dir).read_text()) == profile

    with Cascade.from_dir(cascade_dir) as cascade:
        assert cascade.profile_note is None
        assert cascade.config.batch_sizes == [t["batch_size"] for t in settings]
        assert [t.streams for t in cascade.config.tiers] == [t["streams"] for t in settings]
        assert cascade.describe()["profile"] == "tuned profile in use"

    table = format_report(profile)  # what autotune prints without --json
    assert table.count("<- chosen") == 2 and table.splitlines()[-1].startswith("chosen: tier 1 batch")


def test_autotune_quick_tunes_every_tier_of_three(three_tier_cascade, capsys):
    (three_tier_cascade / "sample.txt").write_text("\n".join(tiny_models.CORPUS * 10) + "\n", encoding="utf-8")
    assert main(["autotune", "--models", str(three_tier_cascade), "--quick", "--rounds", "1", "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert len(profile["settings"]["tiers"]) == 3 and set(profile["measurements"]["tiers"]) == {"tier1", "tier2", "tier3"}
    with Cascade.from_dir(three_tier_cascade) as cascade:
        assert cascade.config.batch_sizes == [t["batch_size"] for t in profile["settings"]["tiers"]]
