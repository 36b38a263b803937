"""The cascade runtime against each tier run alone: routing by threshold, order, streaming, online requests,
threads, statistics, bad inputs and load errors."""

from __future__ import annotations

import json
import math
import shutil
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from conftest import sentences
from tango_edge import Cascade, Prediction, TangoEdgeError
from tango_edge.tier import Tier, softmax

MAX_LENGTH = 128  # CascadeConfig's default, the one the cascades below use
NEAR = 1e-5  # batch composition moves probabilities by ~1e-6: inputs this close to the threshold may go either way
SCORE_TOL = 1e-5


@dataclass
class Reference:
    """Each tier run alone (`Tier.logits`) on the same texts."""

    labels: list[str]
    logits1: np.ndarray
    logits2: np.ndarray
    truncated: list[bool]  # by tier 1's tokenizer

    def tier1(self, temperature: float = 1.0) -> np.ndarray:
        return softmax(self.logits1 / temperature)

    def tier2(self) -> np.ndarray:
        return softmax(self.logits2)


@lru_cache(maxsize=None)
def _reference(folder: str, texts: tuple[str, ...]) -> Reference:
    out = []
    for name in ("tier1", "tier2"):
        tier = Tier(Path(folder) / name, max_length=MAX_LENGTH)
        encoded = tier.encoder.encode(list(texts))
        out.append(tier.logits(encoded, batch_size=16))
        if name == "tier1":
            truncated = [e.truncated for e in encoded]
    return Reference(tier.labels, *out, truncated)


def reference(folder, texts) -> Reference:
    """Cached per folder and texts: always pass the whole `mixed_sentences` and select `rows`."""
    return _reference(str(folder), tuple(texts))


def check_against_tiers(preds, ref: Reference, threshold: float, temperature: float = 1.0, rows=None) -> tuple[int, int]:
    """Every answer is tier 1's where its confidence reaches the threshold, else tier 2's. Returns (tier-1, tier-2) counts."""
    rows = range(len(preds)) if rows is None else rows
    assert len(preds) == len(rows)
    p1, p2 = ref.tier1(temperature), ref.tier2()
    counts = [0, 0]
    for pred, row in zip(preds, rows):
        assert pred.error is None, (row, pred)
        assert pred.truncated == ref.truncated[row], (row, pred)
        want1 = (ref.labels[int(p1[row].argmax())], 1, float(p1[row].max()))
        want2 = (ref.labels[int(p2[row].argmax())], 2, float(p2[row].max()))
        confidence = p1[row].max()
        if abs(confidence - threshold) < NEAR:
            allowed = [want1, want2]
        else:
            allowed = [want1 if confidence >= threshold else want2]
        assert any((pred.label, pred.tier) == w[:2] and pred.score == pytest.approx(w[2], abs=SCORE_TOL) for w in allowed), (row, pred, allowed)
        counts[pred.tier - 1] += 1
    return counts[0], counts[1]


def same_answers(a: list[Prediction], b: list[Prediction]) -> None:
    """Equal up to float noise in the scores (batches of other shapes)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.label, x.tier, x.error, x.truncated) == (y.label, y.tier, y.error, y.truncated), (x, y)
        assert (x.score is None) == (y.score is None)
        if x.score is not None:
            assert x.score == pytest.approx(y.score, abs=SCORE_TOL)


@pytest.fixture(params=["shared", "two_tokenizers"])
def cascade_dir(request, tiny_cascade, tiny_cascade_two_tokenizers):
    return tiny_cascade if request.param == "shared" else tiny_cascade_two_tokenizers


def counting(items, consumed: list[int]):
    """A generator that records how many items were taken from it."""
    for item in items:
        consumed[0] += 1
        yield item


# ---- routing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "which, threshold, temperature",
    [("shared", 0.6, 1.0), ("shared", 0.7, 1.0), ("shared", 0.8, 1.0), ("shared", 0.6, 2.0), ("two_tokenizers", 0.7, 1.0)],
)
def test_answer_comes_from_the_right_tier(which, threshold, temperature, tiny_cascade, tiny_cascade_two_tokenizers, mixed_sentences):
    cascade_dir = tiny_cascade if which == "shared" else tiny_cascade_two_tokenizers
    ref = reference(cascade_dir, mixed_sentences)
    with Cascade.from_dir(cascade_dir, threshold=threshold, temperatures=[temperature], batch_sizes=[16, 8]) as cascade:
        assert cascade.describe()["tiers"][1]["shares_tokens_with_previous"] == (cascade_dir.name == "shared")
        preds = cascade.predict(mixed_sentences)
    n1, n2 = check_against_tiers(preds, ref, threshold, temperature)
    assert n1 > 20 and n2 > 20  # both tiers really answer at these thresholds
    below = int((ref.tier1(temperature).max(axis=1) < threshold).sum())
    assert abs(n2 - below) <= sum(abs(ref.tier1(temperature).max(axis=1) - threshold) < NEAR)
    assert any(ref.truncated) and not all(ref.truncated)  # the long inputs are truncated, and flagged so


def test_threshold_zero_is_tier1_alone(cascade_dir, mixed_sentences):
    ref = reference(cascade_dir, mixed_sentences)
    with Cascade.from_dir(cascade_dir, threshold=0, batch_sizes=[32, 16]) as cascade:
        preds = cascade.predict(mixed_sentences[:300])
        stats = cascade.stats()
    assert {p.tier for p in preds} == {1}
    check_against_tiers(preds, ref, 0.0, rows=range(300))
    assert stats["deferred"] == 0 and stats["deferral_rate"] == 0.0 and stats["tiers"][1]["batches"] == 0


def test_threshold_above_one_is_tier2_alone(cascade_dir, mixed_sentences):
    ref = reference(cascade_dir, mixed_sentences)
    with Cascade.from_dir(cascade_dir, threshold=1.5, batch_sizes=[64, 16]) as cascade:
        preds = cascade.predict(mixed_sentences[:300])
        stats = cascade.stats()
    assert {p.tier for p in preds} == {2}
    p2 = ref.tier2()[:300]
    assert [p.label for p in preds] == [ref.labels[i] for i in p2.argmax(axis=1)]
    assert [p.score for p in preds] == pytest.approx(p2.max(axis=1).tolist(), abs=SCORE_TOL)
    assert stats["tiers"][0]["batches"] == 0 and stats["deferred"] == 300 and stats["deferral_rate"] == 1.0


# ---- streaming --------------------------------------------------------------------------------------


def test_stream_keeps_input_order_over_many_windows(tiny_cascade, mixed_sentences):
    ref = reference(tiny_cascade, mixed_sentences)
    texts = mixed_sentences[:300]
    consumed = [0]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, sort_window=32, batch_sizes=[5, 3]) as cascade:
        stream = cascade.predict_iter(counting(texts, consumed))
        streamed = list(stream)
        assert stream.finished() == []
        stats = cascade.stats()
        listed = cascade.predict(list(texts))
    assert consumed[0] == len(texts) == len(streamed)
    check_against_tiers(streamed, ref, 0.7, rows=range(300))
    same_answers(streamed, listed)
    # windows of 32 inputs, each sorted and cut into batches of 5 ending in a partial one
    assert stats["tiers"][0]["batches"] == (300 // 32) * math.ceil(32 / 5) + math.ceil(300 % 32 / 5)
    assert stats["tiers"][1]["batches"] >= math.ceil(stats["deferred"] / 3)


def test_stream_reads_its_input_lazily(tiny_cascade):
    n, window = 3000, 32
    texts = [s for s in sentences(2 * n, seed=11) if len(s.split()) <= 8][:n]  # short: cheap to run through
    assert len(texts) == n
    consumed = [0]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, sort_window=window, batch_sizes=[8, 4]) as cascade:
        stream = cascade.predict_iter(counting(texts, consumed))
        assert consumed[0] == 0  # nothing read before the first result is asked for
        first = next(stream)
        assert first.error is None
        assert consumed[0] <= 5 * window  # a few windows, not the whole input
        taken, most_ahead = 1, consumed[0] - 1
        for prediction in stream:
            assert prediction.error is None
            taken += 1
            most_ahead = max(most_ahead, consumed[0] - taken)
            if taken == 600:
                break
        assert consumed[0] < n / 2
    assert most_ahead <= 5 * window  # bounded memory: never far ahead of the reader


def test_empty_stream(tiny_cascade):
    with Cascade.from_dir(tiny_cascade) as cascade:
        assert cascade.predict([]) == []
        assert list(cascade.predict_iter(iter(()))) == []


# ---- online requests and threads --------------------------------------------------------------------


def test_submit_matches_predict_including_deferred(tiny_cascade, mixed_sentences):
    texts = mixed_sentences[:40]
    ref = reference(tiny_cascade, mixed_sentences)
    with Cascade.from_dir(tiny_cascade, threshold=0.7, batch_sizes=[8, 4], max_wait_ms=2) as cascade:
        futures = [cascade.submit(t) for t in texts]
        answers = [f.result(timeout=30) for f in futures]
        same_answers(answers, cascade.predict(texts))
        # A lone deferred request: tier 2's batch never fills, so only max_wait_ms releases it.
        low = int(np.argmin(ref.tier1()[:40].max(axis=1)))
        lone = cascade.submit(texts[low]).result(timeout=30)
        bad = cascade.submit("   ").result(timeout=30)
    n1, n2 = check_against_tiers(answers, ref, 0.7, rows=range(40))
    assert n1 > 0 and n2 > 0
    assert lone.tier == 2
    check_against_tiers([lone], ref, 0.7, rows=[low])
    assert bad.error == "empty input" and bad.label is None


def test_submit_when_tier2_only(tiny_cascade, mixed_sentences):
    ref = reference(tiny_cascade, mixed_sentences)
    with Cascade.from_dir(tiny_cascade, threshold=1.5, batch_sizes=[64, 8], max_wait_ms=1) as cascade:
        answers = [f.result(timeout=30) for f in [cascade.submit(t) for t in mixed_sentences[:10]]]
    check_against_tiers(answers, ref, 1.5, rows=range(10))


def test_threads_share_one_cascade(tiny_cascade, mixed_sentences):
    cascade_dir = tiny_cascade
    ref = reference(cascade_dir, mixed_sentences)
    slices = [range(k, len(mixed_sentences), 4) for k in range(4)]  # each thread its own inputs
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    online: list = []
    barrier = threading.Barrier(5)

    with Cascade.from_dir(cascade_dir, threshold=0.7, sort_window=32, batch_sizes=[8, 4], max_wait_ms=2) as cascade:

        def work(k):
            try:
                barrier.wait()
                results[k] = cascade.predict(mixed_sentences[i] for i in slices[k])
            except BaseException as exc:
                errors.append(exc)

        def submit():
            barrier.wait()
            online.extend(f.result(timeout=60) for f in [cascade.submit(mixed_sentences[i]) for i in range(40)])

        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(4)]
        threads.append(threading.Thread(target=submit, daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
            assert not t.is_alive()
        stats = cascade.stats()
    assert not errors
    for k in range(4):
        check_against_tiers(results[k], ref, 0.7, rows=slices[k])
    check_against_tiers(online, ref, 0.7, rows=range(40))
    assert stats["count"] == len(mixed_sentences) + 40


# ---- statistics -------------------------------------------------------------------------------------


def test_stats_agree_with_the_answers(tiny_cascade, mixed_sentences):
    bad = ["", b"\xff", 7]
    inputs = list(mixed_sentences) + bad
    n = len(mixed_sentences)
    with Cascade.from_dir(tiny_cascade, threshold=0.7, batch_sizes=[16, 8]) as cascade:
        preds = cascade.predict(inputs)
        stats = cascade.stats()
        cascade.reset_stats()
        after_reset = cascade.stats()
    tier2 = sum(p.tier == 2 for p in preds)
    assert stats["count"] == len(inputs)
    assert stats["answered"] == n and stats["errors"] == len(bad)
    assert stats["deferred"] == tier2 > 0
    assert stats["deferral_rate"] == pytest.approx(tier2 / n)
    assert stats["threshold"] == 0.7 and stats["thresholds"] == [0.7] and stats["batch_sizes"] == [16, 8]
    assert stats["tiers"][0]["items"] == n
    assert stats["tiers"][0]["batches"] == math.ceil(n / 16)  # one sort window: full batches plus one partial
    assert stats["tiers"][1]["items"] == tier2
    assert math.ceil(tier2 / 8) <= stats["tiers"][1]["batches"] <= tier2
    assert stats["tiers"][1]["mean_batch_size"] == pytest.approx(tier2 / stats["tiers"][1]["batches"])
    assert stats["latency_ms"]["count"] == n
    assert stats["tiers"][1]["queue_wait_ms"]["count"] == tier2
    assert stats["tiers"][0]["answers"] == n - tier2 and stats["tiers"][1]["answers"] == tier2
    assert stats["tiers"][1]["reach_rate"] == pytest.approx(tier2 / n)
    assert stats["tiers"][0]["batch_time_ms"]["count"] == stats["tiers"][0]["batches"]
    assert stats["seconds"] > 0 and stats["throughput_per_s"] > 0
    assert after_reset["count"] == 0 and after_reset["tiers"][0]["batches"] == 0 and after_reset["latency_ms"]["count"] == 0
    assert after_reset["tiers"][1]["queue_wait_ms"]["count"] == 0 and after_reset["deferred"] == 0


# ---- bad inputs -------------------------------------------------------------------------------------


def test_bad_inputs_get_an_error_in_place(tiny_cascade, mixed_sentences):
    good = mixed_sentences[:6]
    long_line = " ".join(["great"] * 5000)
    inputs = [good[0], "", good[1], "   ", b"\xff\xfe", good[2], long_line, 123, good[3], None, good[4].encode(), b"", good[5]]
    ref = reference(tiny_cascade, mixed_sentences)
    with Cascade.from_dir(tiny_cascade, threshold=0.7, batch_sizes=[4, 2]) as cascade:
        preds = cascade.predict(iter(inputs))
        stats = cascade.stats()
        only_bad = cascade.predict(["", 1.5])
    assert len(preds) == len(inputs)
    errors = {i: p.error for i, p in enumerate(preds) if p.error is not None}
    assert errors == {
        1: "empty input",
        3: "empty input",
        4: "invalid UTF-8 at byte 0",
        7: "expected a string, got int",
        9: "expected a string, got NoneType",
        11: "empty input",
    }
    for i in errors:
        assert (preds[i].label, preds[i].score, preds[i].tier) == (None, None, None)
    check_against_tiers([preds[i] for i in (0, 2, 5, 8, 10, 12)], ref, 0.7, rows=range(6))  # UTF-8 bytes are decoded
    long = preds[6]
    alone = Tier(tiny_cascade / "tier1", max_length=MAX_LENGTH)
    confidence = softmax(alone.logits(alone.encoder.encode([long_line]), batch_size=1))[0].max()
    assert long.truncated and long.error is None and long.tier == (1 if confidence >= 0.7 else 2)
    assert stats["errors"] == 6 and stats["truncated"] == 1 + sum(ref.truncated[:6]) and stats["count"] == len(inputs)
    assert [p.error for p in only_bad] == ["empty input", "expected a string, got float"]


def test_prediction_to_dict():
    assert Prediction("positive", 0.123456789, 2).to_dict() == {"label": "positive", "score": 0.123457, "tier": 2}
    assert Prediction("negative", 0.9, 1, truncated=True).to_dict() == {"label": "negative", "score": 0.9, "tier": 1, "truncated": True}
    assert Prediction(None, None, None, error="empty input").to_dict() == {"label": None, "score": None, "tier": None, "error": "empty input"}


# ---- load errors and lifecycle ----------------------------------------------------------------------


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


BROKEN = {
    "missing tier2 model": (lambda d: (d / "tier2" / "openvino_model.xml").unlink(), r"tier2/openvino_model\.xml is missing"),
    "garbage model": (lambda d: (d / "tier2" / "openvino_model.xml").write_bytes(b"\x00not <xml> at all"), r"cannot read .*tier2/openvino_model\.xml: Unable to read the model"),
    "garbage tokenizer": (lambda d: (d / "tier1" / "tokenizer.json").write_text("{nope"), r"cannot load tokenizer .*tier1/tokenizer\.json"),
    "missing config.json": (lambda d: (d / "tier1" / "config.json").unlink(), r"tier1/config\.json is missing"),
    "cascade.json missing": (lambda d: (d / "cascade.json").unlink(), r"cascade\.json is missing"),
    "cascade.json not JSON": (lambda d: (d / "cascade.json").write_text('{"threshold": 0.8,'), r"cascade\.json is not valid JSON"),
    "cascade.json not an object": (lambda d: (d / "cascade.json").write_text("[0.8]"), r"cascade\.json must hold a JSON object"),
    "threshold -1": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1", "threshold": -1}, {"dir": "tier2"}]), r"cascade\.json: invalid tiers\[0\]\.threshold=-1"),
    "threshold abc": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1", "threshold": "abc"}, {"dir": "tier2"}]), r"cascade\.json: invalid tiers\[0\]\.threshold='abc'"),
    "v1 threshold -1": (lambda d: (d / "cascade.json").write_text('{"threshold": -1}'), r"cascade\.json: invalid tiers\[0\]\.threshold=-1"),
    "unknown field": (lambda d: _edit_json(d / "cascade.json", treshold=0.5), r"unknown field\(s\) \['treshold'\]"),
    "unknown tier field": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1", "treshold": 0.5}, {"dir": "tier2"}]), r"tiers\[0\]: unknown field\(s\) \['treshold'\]"),
    "last tier with a threshold": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1", "threshold": 0.5}, {"dir": "tier2", "threshold": 0.5}]), r"tiers\[1\]\.threshold=0\.5: the last tier answers everything"),
    "one tier": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1"}]), r"at least two tiers"),
    "tier without dir": (lambda d: _edit_json(d / "cascade.json", tiers=[{"threshold": 0.5}, {"dir": "tier2"}]), r"tiers\[0\]: 'dir' .* is missing"),
    "tier dir outside": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "../x", "threshold": 0.5}, {"dir": "tier2"}]), r"tiers\[0\]\.dir='\.\./x': must be a folder name inside"),
    "missing tier folder": (lambda d: _edit_json(d / "cascade.json", tiers=[{"dir": "tier1", "threshold": 0.5}, {"dir": "tier9"}]), r"tier9/openvino_model\.xml is missing"),
    "unknown version": (lambda d: _edit_json(d / "cascade.json", version=3), r"unknown cascade\.json version 3"),
    "labels differ": (lambda d: _edit_json(d / "tier2" / "config.json", id2label={"0": "bad", "1": "good"}), r"tiers disagree on labels"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folder_raises(case, tiny_cascade, tmp_path):
    folder = tmp_path / "cascade"
    shutil.copytree(tiny_cascade, folder)
    breaks, message = BROKEN[case]
    breaks(folder)
    with pytest.raises(TangoEdgeError, match=message):
        Cascade.from_dir(folder)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(TangoEdgeError, match=r"model folder .*nowhere does not exist"):
        Cascade.from_dir(tmp_path / "nowhere")


def test_unknown_device_raises(tiny_cascade):
    with pytest.raises(TangoEdgeError, match=r'cannot compile .*tier1/openvino_model\.xml on NOPE: Device with "NOPE" name is not registered'):
        Cascade.from_dir(tiny_cascade, device="NOPE")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"threshold": -0.5}, r"invalid tiers\[0\]\.threshold=-0\.5"),
        ({"batch_sizes": [0, 16]}, r"invalid tiers\[0\]\.batch_size=0"),
        ({"batch_sizes": [8]}, r"batch_sizes: this cascade has 2 tiers; got 1"),
        ({"temperatures": [0]}, r"invalid tiers\[0\]\.temperature=0"),
        ({"threshold": float("nan")}, r"invalid tiers\[0\]\.threshold=nan"),
        ({"thresholds": [0.5, 0.5]}, r"2 tiers, so 1 threshold"),
        ({"tier1_batch_size": 8}, r"unknown setting\(s\) \['tier1_batch_size'\]"),
    ],
)
def test_bad_overrides_raise(tiny_cascade, overrides, message):
    with pytest.raises(TangoEdgeError, match=message):
        Cascade.from_dir(tiny_cascade, **overrides)


def test_closed_cascade_raises(tiny_cascade):
    cascade = Cascade.from_dir(tiny_cascade)
    assert cascade.predict(["a great film"])[0].error is None
    cascade.close()
    cascade.close()  # idempotent
    for call in (lambda: cascade.predict(["a great film"]), lambda: cascade.predict_iter(["x"]), lambda: cascade.submit("x")):
        with pytest.raises(TangoEdgeError, match="closed"):
            call()


def test_stream_after_close_raises_instead_of_hanging(tiny_cascade):
    texts = [s for s in sentences(4000, seed=5) if len(s.split()) <= 5][:2000]
    cascade = Cascade.from_dir(tiny_cascade, threshold=0.8, sort_window=32, batch_sizes=[8, 4])
    stream = cascade.predict_iter(iter(texts))
    assert next(stream).error is None
    cascade.close()
    outcome = []

    def drain():
        try:
            outcome.append(sum(1 for _ in stream))
        except TangoEdgeError as exc:
            outcome.append(exc)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the stream hangs once its cascade is closed"
    assert isinstance(outcome[0], TangoEdgeError) and "closed" in str(outcome[0])


def test_close_while_another_thread_predicts_does_not_hang(tiny_cascade):
    """close() runs while a stream in another thread is between windows: the stream's answers in flight are
    finished, and its next window raises instead of waiting forever."""
    texts = [s for s in sentences(6000, seed=9) if len(s.split()) <= 5][:300]
    cascade = Cascade.from_dir(tiny_cascade, threshold=0.8, sort_window=32, batch_sizes=[8, 4])
    reached, closed = threading.Event(), threading.Event()
    outcome = []

    def source():
        for k, text in enumerate(texts):
            if k == 100:  # mid-input: let the main thread close the cascade, then go on
                reached.set()
                closed.wait(30)
            yield text

    def run():
        out = []
        try:
            for p in cascade.predict_iter(source()):
                out.append(p)
        except TangoEdgeError as exc:
            outcome.append((out, exc))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert reached.wait(30)
    cascade.close()
    closed.set()
    t.join(30)
    assert not t.is_alive(), "a stream running while its cascade closes never finishes"
    answered, error = outcome[0]
    assert "closed" in str(error)
    assert len(answered) <= 100 and all(p.error is None for p in answered)


# ---- N tiers, encoders, online batching --------------------------------------------------------------


def tier_probs(folder: Path, texts: list) -> list[np.ndarray]:
    """softmax(logits / T) of every tier run alone (`Tier.logits`), T from cascade.json."""
    from tango_edge.config import CascadeConfig

    config = CascadeConfig.load(folder)
    out = []
    for tier_config in config.tiers:
        tier = Tier(folder / tier_config.dir, max_length=MAX_LENGTH)
        out.append(softmax(tier.logits(tier.encoder.encode(list(texts)), batch_size=16) / tier_config.temperature))
    return out, tier.labels


def check_n_tiers(preds, probs: list[np.ndarray], labels, thresholds) -> list[int]:
    """Every answer comes from the first tier whose confidence reaches its threshold (a threshold above 1 skips
    the tier), else from the last tier. Returns the count answered by each tier."""
    counts = [0] * len(probs)
    for row, pred in enumerate(preds):
        assert pred.error is None, (row, pred)
        allowed, settled = [], False
        for k, p in enumerate(probs):
            confidence = float(p[row].max())
            answer = (labels[int(p[row].argmax())], k + 1, confidence)
            if k == len(probs) - 1:
                allowed.append(answer)
                break
            if thresholds[k] > 1.0:
                continue
            if abs(confidence - thresholds[k]) < NEAR:  # float noise of another batch shape: either way
                allowed.append(answer)
                continue
            if confidence >= thresholds[k]:
                allowed.append(answer)
                settled = True
                break
        assert any((pred.label, pred.tier) == a[:2] and pred.score == pytest.approx(a[2], abs=SCORE_TOL) for a in allowed), (row, pred, allowed, settled)
        counts[pred.tier - 1] += 1
    return counts


@pytest.mark.parametrize("thresholds", [[0.7, 0.8], [0.65, 0.9], [1.5, 0.8], [0.7, 1.5], [0.7, 0.0]])
def test_three_tiers_answer_by_the_rule(three_tier_cascade, mixed_sentences, thresholds):
    probs, labels = tier_probs(three_tier_cascade, mixed_sentences)
    with Cascade.from_dir(three_tier_cascade, thresholds=thresholds, batch_sizes=[16, 8, 4]) as cascade:
        preds = cascade.predict(mixed_sentences)
        stats = cascade.stats()
    counts = check_n_tiers(preds, probs, labels, thresholds)
    assert [t["answers"] for t in stats["tiers"]] == counts
    for k, threshold in enumerate(thresholds):  # a skipped tier runs nothing; a tier with threshold 0 ends the cascade
        if threshold > 1.0:
            assert stats["tiers"][k]["batches"] == 0 and counts[k] == 0
    if thresholds == [0.7, 0.0]:
        assert stats["tiers"][2]["batches"] == 0 and counts[1] > 0
    if thresholds == [0.7, 0.8]:
        assert all(count > 20 for count in counts)  # every tier really answers


def test_encoders_of_two_architectures_in_one_cascade(mixed_encoder_cascade, mixed_sentences):
    """BERT (token_type_ids, [CLS] A [SEP], pad 0) then two MPNets (no token_type_ids, <s> A </s>, pad 1)."""
    probs, labels = tier_probs(mixed_encoder_cascade, mixed_sentences)
    with Cascade.from_dir(mixed_encoder_cascade, batch_sizes=[16, 8, 8]) as cascade:
        described = cascade.describe()["tiers"]
        preds = cascade.predict(mixed_sentences)
        online = cascade.submit_many(mixed_sentences[:50]).result(timeout=60)
    assert "token_type_ids" in described[0]["inputs"] and "token_type_ids" not in described[1]["inputs"]
    assert [t["shares_tokens_with_previous"] for t in described] == [False, False, True]
    assert described[1]["tokenizer"].startswith("native")  # MPNet's vocabulary takes the C++ fast path too
    counts = check_n_tiers(preds, probs, labels, [0.7, 0.75])
    assert counts[1] > 0 and counts[2] > 0
    same_answers(online, preds[:50])


def test_version_1_and_2_folders_answer_alike(tiny_irs, tmp_path, mixed_sentences):
    import tiny_models

    v1 = tiny_models.assemble_cascade(tmp_path / "v1", tiny_irs["a"], tiny_irs["b"], legacy=True, threshold=0.7, temperature=1.5)
    v2 = tiny_models.assemble_cascade(tmp_path / "v2", tiny_irs["a"], tiny_irs["b"], thresholds=[0.7])
    raw = json.loads((v2 / "cascade.json").read_text())
    raw["tiers"][0]["temperature"] = 1.5
    (v2 / "cascade.json").write_text(json.dumps(raw))
    with Cascade.from_dir(v1) as a, Cascade.from_dir(v2) as b:
        assert a.config.tiers == b.config.tiers
        same_answers(a.predict(mixed_sentences), b.predict(mixed_sentences))


def test_submit_many_and_predict_async_keep_input_order(tiny_cascade, mixed_sentences):
    import asyncio

    texts = mixed_sentences[:60] + ["", b"\xff"]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, batch_sizes=[8, 4], max_wait_ms=2) as cascade:
        listed = cascade.predict(texts)
        grouped = cascade.submit_many(texts).result(timeout=60)

        async def main():
            return await asyncio.gather(cascade.predict_async(texts[:30]), cascade.predict_async(texts[30:]), cascade.predict_async([]))

        first, second, empty = asyncio.run(main())
    same_answers(grouped, listed)
    same_answers(first + second, listed)
    assert empty == [] and grouped[-2].error == "empty input" and grouped[-1].error.startswith("invalid UTF-8")


def test_concurrent_online_requests_lose_and_duplicate_nothing(tiny_cascade, mixed_sentences):
    """Eight threads submit 40 requests each into one cascade: every answer is the one predict() gives."""
    texts = mixed_sentences[:320]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, batch_sizes=[8, 4], max_wait_ms=2) as cascade:
        want = cascade.predict(texts)
        cascade.reset_stats()
        barrier, got = threading.Barrier(8), {}

        def client(k):
            barrier.wait()
            for i in range(k, len(texts), 8):
                got[i] = cascade.submit(texts[i]).result(timeout=60)

        workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        stats = cascade.stats()
    assert sorted(got) == list(range(len(texts)))
    same_answers([got[i] for i in range(len(texts))], want)
    assert stats["count"] == len(texts) and stats["tiers"][0]["items"] == len(texts)


def test_an_idle_first_tier_takes_a_lone_request_at_once(tiny_cascade, mixed_sentences):
    """Continuous batching at the first tier: a lone request is answered although its batch never fills and its
    deadline (max_wait_ms, a minute here) never passes."""
    with Cascade.from_dir(tiny_cascade, threshold=0.0, batch_sizes=[8, 8], max_wait_ms=60_000) as cascade:
        answers = [cascade.submit(text).result(timeout=30) for text in mixed_sentences[:5]]
    assert [a.tier for a in answers] == [1] * 5


def test_later_tiers_gather_deferred_online_requests_until_their_deadline(three_tier_cascade, mixed_sentences):
    """A lone request that every tier defers: the first tier takes it at once; each later tier holds it for a
    batch until max_wait_ms releases it."""
    probs, _ = tier_probs(three_tier_cascade, mixed_sentences)
    row = next(r for r in range(len(mixed_sentences)) if probs[0][r].max() < 0.6 and probs[1][r].max() < 0.6)
    with Cascade.from_dir(three_tier_cascade, thresholds=[0.7, 0.7], batch_sizes=[8, 8, 8], max_wait_ms=20) as cascade:
        answer = cascade.submit(mixed_sentences[row]).result(timeout=30)
        waits = [t["queue_wait_ms"] for t in cascade.stats()["tiers"]]
    assert answer.tier == 3
    assert all(w["count"] == 1 for w in waits)
    assert waits[1]["min_ms"] >= 20.0 and waits[2]["min_ms"] >= 20.0
