"""`tango-edge serve` as a real server on 127.0.0.1 (an ephemeral port), driven by a real HTTP client (urllib):
every request shape, answers equal to Cascade.predict, concurrent clients, each error status, overload,
SIGTERM during load, and /metrics."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tango_edge import Cascade  # noqa: E402
from tango_edge.serve.launch import ServerProcess  # noqa: E402

SCORE_TOL = 1e-5
START_SECONDS = 120


class Server(ServerProcess):
    """A `tango-edge serve` subprocess on a free port, with a real HTTP client (urllib)."""

    def __init__(self, models, *flags: str):
        command = [sys.executable, "-m", "tango_edge.cli", "serve", "--models", str(models), "--port", "0", *flags]
        super().__init__(command, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_seconds=START_SECONDS)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or text)."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, head, raw = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, head, raw = exc.code, dict(exc.headers), exc.read()
        text = raw.decode()
        try:
            return status, head, json.loads(text) if text else None
        except ValueError:
            return status, head, text

    def predict(self, payload) -> tuple[int, dict, object]:
        return self.request("POST", "/predict", json.dumps(payload).encode())

    def metrics(self) -> dict:
        status, _, text = self.request("GET", "/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


@pytest.fixture(scope="module")
def server(tiny_cascade):
    s = Server(tiny_cascade, "--max-client-batch-size", "4", "--payload-limit", "4000")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def reference(tiny_cascade):
    with Cascade.from_dir(tiny_cascade) as cascade:
        yield cascade


def check_answer(answer, prediction, labels) -> None:
    """TEI's shape: every label, highest score first; the top one is the cascade's answer."""
    assert [a["label"] for a in answer] == sorted(labels, key=lambda l: -prediction.probabilities[labels.index(l)])
    assert answer[0]["label"] == prediction.label and answer[0]["score"] == pytest.approx(prediction.score, abs=SCORE_TOL)
    assert sum(a["score"] for a in answer) == pytest.approx(1.0, abs=1e-5)


def test_health_and_info(server):
    status, _, _ = server.request("GET", "/health")
    assert status == 200
    status, _, info = server.request("GET", "/info")
    assert status == 200 and info["max_client_batch_size"] == 4 and info["payload_limit"] == 4000 and info["max_concurrent_requests"] == 512
    assert info["model_type"]["classifier"]["id2label"] == {"0": "negative", "1": "positive"}
    assert [t["tier"] for t in info["tiers"]] == [1, 2] and info["thresholds"] == [0.8] and info["pair_task"] is False


def test_one_input_and_a_batch_answer_as_predict_does(server, reference, mixed_sentences):
    texts = mixed_sentences[:4]
    want = reference.predict(texts)
    status, headers, single = server.predict({"inputs": texts[0]})
    assert status == 200
    check_answer(single, want[0], reference.labels)
    assert headers["x-tango-tier"] == str(want[0].tier)
    status, headers, batch = server.predict({"inputs": [[t] for t in texts]})
    assert status == 200 and len(batch) == 4
    for answer, prediction in zip(batch, want):
        check_answer(answer, prediction, reference.labels)
    assert headers["x-tango-tier"] == ",".join(str(p.tier) for p in want)


def test_raw_scores_are_the_answering_tiers_logits(server, reference, mixed_sentences):
    want = reference.predict(mixed_sentences[:1])[0]
    status, _, answer = server.predict({"inputs": mixed_sentences[0], "raw_scores": True})
    assert status == 200
    by_label = {a["label"]: a["score"] for a in answer}
    assert [by_label[l] for l in reference.labels] == pytest.approx(list(want.logits), abs=1e-4)


def test_long_inputs_are_truncated_unless_the_request_says_not_to(server):
    long_text = " ".join(["great"] * 400)  # about 2.4 kB, under the payload limit; far above 128 tokens
    status, _, _ = server.predict({"inputs": long_text})
    assert status == 200
    status, _, body = server.predict({"inputs": long_text, "truncate": False})
    assert status == 413 and body["error_type"] == "validation" and "128 tokens" in body["error"]


@pytest.mark.parametrize(
    "payload, status, error_type, message",
    [
        ({"inputs": [["a"]] * 5}, 413, "validation", "batch size 5 > maximum allowed batch size 4"),
        ({"inputs": ["a great film", "dull"]}, 422, "validation", "a pair"),
        ({"inputs": [["a", "b", "c"]]}, 422, "validation", "one or two strings"),
        ({"inputs": 7}, 422, "validation", "must be a string"),
        ({"inputs": []}, 422, "validation", "must be a string"),
        ({"inputs": "   "}, 422, "tokenizer", "empty input"),
        ({"inputs": "x", "truncate": "yes"}, 422, "validation", "true or false"),
        ({"text": "x"}, 400, "validation", 'with "inputs"'),
    ],
)
def test_bad_requests_get_teis_status_and_error_body(server, payload, status, error_type, message):
    got, _, body = server.predict(payload)
    assert got == status and body["error_type"] == error_type and message in body["error"]


def test_empty_malformed_and_oversized_bodies(server):
    for raw, status in ((b"", 400), (b"{not json", 400), (json.dumps({"inputs": "x" * 5000}).encode(), 413)):
        got, _, body = server.request("POST", "/predict", raw)
        assert got == status and set(body) == {"error", "error_type"}


def test_eight_clients_lose_and_duplicate_nothing_and_metrics_count_them(server, reference, mixed_sentences):
    before = server.metrics()
    texts = mixed_sentences[:200]
    want = reference.predict(texts)
    results: dict[tuple[int, int], tuple] = {}
    errors: list = []

    def client(k):
        try:
            for i in range(200):
                text = texts[(i * 8 + k) % len(texts)]
                results[k, i] = (text, server.predict({"inputs": text}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and len(results) == 1600
    by_text = dict(zip(texts, want))
    for text, (status, headers, answer) in results.values():
        assert status == 200
        check_answer(answer, by_text[text], reference.labels)
        assert headers["x-tango-tier"] == str(by_text[text].tier)
    after = server.metrics()
    delta = lambda name, **labels: after.get((name, tuple(sorted(labels.items()))), 0) - before.get((name, tuple(sorted(labels.items()))), 0)
    assert delta("te_request_count_total", outcome="success") == 1600
    assert delta("te_input_count_total") == 1600
    assert delta("te_request_duration_seconds_count") == 1600
    assert delta("te_answers_count_total", tier="1") + delta("te_answers_count_total", tier="2") == 1600
    tier2 = sum(1 for text, _ in results.values() if by_text[text].tier == 2)
    assert delta("te_answers_count_total", tier="2") == tier2
    assert delta("te_batch_size_sum", tier="1") == 1600 and delta("te_queue_duration_seconds_count") == 1600
    assert after[("te_requests_in_flight", ())] == 0


@pytest.fixture
def held_cascade(tiny_irs, tmp_path):
    """A cascade whose first tier defers every input (threshold 1.0) to a tier whose batch of 16 never fills."""
    import tiny_models

    return tiny_models.assemble_cascade(tmp_path / "held", tiny_irs["a"], tiny_irs["b"], thresholds=[1.0])


def test_overload_gets_429_and_sigterm_answers_every_accepted_request(held_cascade, mixed_sentences):
    """Two requests wait in tier 2's queue (no batch fills, max_wait_ms is ten minutes): a third is refused with
    429. SIGTERM then stops the server: the two accepted ones are answered, and it exits 0."""
    server = Server(held_cascade, "--max-concurrent-requests", "2", "--max-wait-ms", "600000")
    try:
        replies: list = []
        threads = [threading.Thread(target=lambda t=t: replies.append(server.predict({"inputs": t})), daemon=True) for t in mixed_sentences[:2]]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while server.metrics()[("te_requests_in_flight", ())] < 2:  # both accepted and held
            assert time.monotonic() < deadline, "".join(server.log)
            time.sleep(0.02)
        status, _, body = server.predict({"inputs": mixed_sentences[2]})
        assert status == 429 and body == {"error": "Model is overloaded", "error_type": "overloaded"}
        assert server.stop(signal.SIGTERM) == 0
        for t in threads:
            t.join(30)
        assert len(replies) == 2 and all(status == 200 for status, _, _ in replies)
        assert all(headers["x-tango-tier"] == "2" for _, headers, _ in replies)
    finally:
        server.stop(signal.SIGKILL)


def test_serve_without_the_extra_says_what_to_install(monkeypatch, capsys, tiny_cascade):
    from tango_edge.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--models", str(tiny_cascade)]) == 1
    assert "pip install 'tango-edge[serve]'" in capsys.readouterr().err
