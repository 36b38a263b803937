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
    with Cascade.from_dir(cascade_dir, threshold=threshold, temperature=temperature, tier1_batch_size=16, tier2_batch_size=8) as cascade:
        assert cascade.shared_tokenizer == (cascade_dir.name == "shared")
        preds = cascade.predict(mixed_sentences)
    n1, n2 = check_against_tiers(preds, ref, threshold, temperature)
    assert n1 > 20 and n2 > 20  # both tiers really answer at these thresholds
    below = int((ref.tier1(temperature).max(axis=1) < threshold).sum())
    assert abs(n2 - below) <= sum(abs(ref.tier1(temperature).max(axis=1) - threshold) < NEAR)
    assert any(ref.truncated) and not all(ref.truncated)  # the long inputs are truncated, and flagged so


def test_threshold_zero_is_tier1_alone(cascade_dir, mixed_sentences):
    ref = reference(cascade_dir, mixed_sentences)
    with Cascade.from_dir(cascade_dir, threshold=0, tier1_batch_size=32) as cascade:
        preds = cascade.predict(mixed_sentences[:300])
        stats = cascade.stats()
    assert {p.tier for p in preds} == {1}
    check_against_tiers(preds, ref, 0.0, rows=range(300))
    assert stats["deferred"] == 0 and stats["deferral_rate"] == 0.0 and stats["tier2"]["batches"] == 0


def test_threshold_above_one_is_tier2_alone(cascade_dir, mixed_sentences):
    ref = reference(cascade_dir, mixed_sentences)
    with Cascade.from_dir(cascade_dir, threshold=1.5, tier2_batch_size=16) as cascade:
        preds = cascade.predict(mixed_sentences[:300])
        stats = cascade.stats()
    assert {p.tier for p in preds} == {2}
    p2 = ref.tier2()[:300]
    assert [p.label for p in preds] == [ref.labels[i] for i in p2.argmax(axis=1)]
    assert [p.score for p in preds] == pytest.approx(p2.max(axis=1).tolist(), abs=SCORE_TOL)
    assert stats["tier1"]["batches"] == 0 and stats["deferred"] == 300 and stats["deferral_rate"] == 1.0


# ---- streaming --------------------------------------------------------------------------------------


def test_stream_keeps_input_order_over_many_windows(tiny_cascade, mixed_sentences):
    ref = reference(tiny_cascade, mixed_sentences)
    texts = mixed_sentences[:300]
    consumed = [0]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, sort_window=32, tier1_batch_size=5, tier2_batch_size=3) as cascade:
        stream = cascade.predict_iter(counting(texts, consumed))
        streamed = list(stream)
        assert stream.finished() == []
        stats = cascade.stats()
        listed = cascade.predict(list(texts))
    assert consumed[0] == len(texts) == len(streamed)
    check_against_tiers(streamed, ref, 0.7, rows=range(300))
    same_answers(streamed, listed)
    # windows of 32 inputs, each sorted and cut into batches of 5 ending in a partial one
    assert stats["tier1"]["batches"] == (300 // 32) * math.ceil(32 / 5) + math.ceil(300 % 32 / 5)
    assert stats["tier2"]["batches"] >= math.ceil(stats["deferred"] / 3)


def test_stream_reads_its_input_lazily(tiny_cascade):
    n, window = 3000, 32
    texts = [s for s in sentences(2 * n, seed=11) if len(s.split()) <= 8][:n]  # short: cheap to run through
    assert len(texts) == n
    consumed = [0]
    with Cascade.from_dir(tiny_cascade, threshold=0.7, sort_window=window, tier1_batch_size=8, tier2_batch_size=4) as cascade:
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
    with Cascade.from_dir(tiny_cascade, threshold=0.7, tier1_batch_size=8, tier2_batch_size=4, max_wait_ms=2) as cascade:
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
    with Cascade.from_dir(tiny_cascade, threshold=1.5, tier2_batch_size=8, max_wait_ms=1) as cascade:
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

    with Cascade.from_dir(cascade_dir, threshold=0.7, sort_window=32, tier1_batch_size=8, tier2_batch_size=4, max_wait_ms=2) as cascade:

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
    with Cascade.from_dir(tiny_cascade, threshold=0.7, tier1_batch_size=16, tier2_batch_size=8) as cascade:
        preds = cascade.predict(inputs)
        stats = cascade.stats()
        cascade.reset_stats()
        after_reset = cascade.stats()
    tier2 = sum(p.tier == 2 for p in preds)
    assert stats["count"] == len(inputs)
    assert stats["answered"] == n and stats["errors"] == len(bad)
    assert stats["deferred"] == tier2 > 0
    assert stats["deferral_rate"] == pytest.approx(tier2 / n)
    assert stats["threshold"] == 0.7 and stats["tier1_batch_size"] == 16 and stats["tier2_batch_size"] == 8
    assert stats["tier1"]["items"] == n
    assert stats["tier1"]["batches"] == math.ceil(n / 16)  # one sort window: full batches plus one partial
    assert stats["tier2"]["items"] == tier2
    assert math.ceil(tier2 / 8) <= stats["tier2"]["batches"] <= tier2
    assert stats["tier2"]["mean_batch_size"] == pytest.approx(tier2 / stats["tier2"]["batches"])
    assert stats["latency_ms"]["count"] == n
    assert stats["deferral_wait_ms"]["count"] == tier2
    assert stats["tier1"]["batch_time_ms"]["count"] == stats["tier1"]["batches"]
    assert stats["seconds"] > 0 and stats["throughput_per_s"] > 0
    assert after_reset["count"] == 0 and after_reset["tier1"]["batches"] == 0 and after_reset["latency_ms"]["count"] == 0
    assert after_reset["deferral_wait_ms"]["count"] == 0 and after_reset["deferred"] == 0


# ---- bad inputs -------------------------------------------------------------------------------------


def test_bad_inputs_get_an_error_in_place(tiny_cascade, mixed_sentences):
    good = mixed_sentences[:6]
    long_line = " ".join(["great"] * 5000)
    inputs = [good[0], "", good[1], "   ", b"\xff\xfe", good[2], long_line, 123, good[3], None, good[4].encode(), b"", good[5]]
    ref = reference(tiny_cascade, mixed_sentences)
    with Cascade.from_dir(tiny_cascade, threshold=0.7, tier1_batch_size=4, tier2_batch_size=2) as cascade:
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
    assert long.truncated and long.error is None and long.label in ref.labels and long.tier in (1, 2)
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
    "threshold -1": (lambda d: _edit_json(d / "cascade.json", threshold=-1), r"cascade\.json: invalid threshold=-1"),
    "threshold abc": (lambda d: _edit_json(d / "cascade.json", threshold="abc"), r"cascade\.json: invalid threshold='abc'"),
    "unknown field": (lambda d: _edit_json(d / "cascade.json", treshold=0.5), r"unknown field\(s\) \['treshold'\]"),
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
    [({"threshold": -0.5}, r"invalid threshold=-0\.5"), ({"tier1_batch_size": 0}, "invalid tier1_batch_size=0"), ({"temperature": 0}, "invalid temperature=0"), ({"threshold": float("nan")}, "invalid threshold=nan")],
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
    cascade = Cascade.from_dir(tiny_cascade, threshold=0.8, sort_window=32, tier1_batch_size=8, tier2_batch_size=4)
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
    texts = [s for s in sentences(6000, seed=9) if len(s.split()) <= 5][:3000]
    cascade = Cascade.from_dir(tiny_cascade, threshold=0.8, sort_window=32, tier1_batch_size=8, tier2_batch_size=4)
    outcome = []
    started = threading.Event()

    def run():
        try:
            out = []
            for p in cascade.predict_iter(iter(texts)):
                out.append(p)
                started.set()
            outcome.append(out)
        except TangoEdgeError as exc:
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    cascade.close()
    t.join(30)
    assert not t.is_alive(), "a stream running while its cascade closes never finishes"
    result = outcome[0]
    if isinstance(result, list):  # it finished first, or its last answers are errors saying why
        assert len(result) == len(texts)
        assert all(p.error is None or "closed" in p.error for p in result)
    else:
        assert "closed" in str(result)
