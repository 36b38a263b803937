"""tango_edge.ray on a real local Ray cluster (2 CPUs, one per test session): order, answers, bad lines, faults."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray
import ray.data

import ray_gate
import tiny_models
from conftest import sentences
from tango_edge import Cascade, TangoEdgeError
from tango_edge.cli import main
from tango_edge.ray import ActorPlan, classify, classify_file, ordered_predictions, plan_actors, predict_file, read_lines

WINDOW = 64  # the cascade's sort window, so a few hundred lines make several Ray blocks


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.cloudpickle.register_pickle_by_value(ray_gate)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def windowed_cascade(tiny_irs, tmp_path_factory):
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("ray") / "cascade", tiny_irs["a"], tiny_irs["c"], thresholds=[0.8], sort_window=WINDOW)


def corpus_lines(n: int) -> list[bytes]:
    """Mixed-length sentences with bad lines among them: empty, not UTF-8, blank, CRLF-ended."""
    lines = [s.encode() for s in sentences(n, seed=7)]
    lines[5] = b""
    lines[17] = b"\xff\xfe not utf-8"
    lines[33] = b"   "
    lines[41] = lines[41] + b"\r"  # with the "\n" below: a CRLF line
    return lines


def write_corpus(path, lines: list[bytes], final_newline: bool = True):
    path.write_bytes(b"\n".join(lines) + (b"\n" if final_newline else b""))
    return path


def local_json(models, lines: list[bytes]) -> list[str]:
    with Cascade.from_dir(models) as cascade:
        return [json.dumps(p.to_dict()) for p in cascade.predict(line.rstrip(b"\r") for line in lines)]


def assert_same_answers(got: list[str], want: list[str]) -> None:
    """Line for line the same label, tier, error and truncation; scores to 1e-5. A batch's padded length and the
    thread count change the order in which OpenVINO sums, moving scores in the sixth decimal, and which deferred
    inputs share a later tier's batch depends on timing, locally as on Ray."""
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want)):
        g, w = json.loads(g), json.loads(w)
        g_score, w_score = g.pop("score"), w.pop("score")
        assert g == w, f"line {index + 1}"
        assert (g_score is None) == (w_score is None) and (g_score is None or abs(g_score - w_score) <= 1e-5), f"line {index + 1}: {g_score} vs {w_score}"


def test_a_file_comes_back_line_for_line_in_order_with_the_local_answers(ray_cluster, windowed_cascade, tmp_path):
    lines = corpus_lines(333)  # 6 blocks, the last one short
    source = write_corpus(tmp_path / "in.txt", lines, final_newline=False)
    got = [json.dumps(p.to_dict()) for p in predict_file(source, windowed_cascade, plan=ActorPlan(actors=2, cpus_per_actor=1))]
    assert len(got) == len(lines)
    assert_same_answers(got, local_json(windowed_cascade, lines))
    errors = {i: json.loads(line)["error"] for i, line in enumerate(got) if "error" in json.loads(line)}
    assert errors == {5: "empty input", 17: "invalid UTF-8 at byte 0", 33: "empty input"}
    tiers = {json.loads(line)["tier"] for line in got}
    assert tiers >= {1, 2}  # both tiers answered something: the deferral path ran on Ray too


def test_run_with_ray_writes_what_a_local_run_writes(ray_cluster, windowed_cascade, tmp_path, capsys):
    source = write_corpus(tmp_path / "in.txt", corpus_lines(200))
    assert main(["run", "--input", str(source), "--models", str(windowed_cascade), "--output", str(tmp_path / "local.jsonl")]) == 0
    assert main(["run", "--input", str(source), "--models", str(windowed_cascade), "--output", str(tmp_path / "ray.jsonl"), "--ray", "--json"]) == 0
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert_same_answers((tmp_path / "ray.jsonl").read_text().splitlines(), (tmp_path / "local.jsonl").read_text().splitlines())
    assert summary["count"] == 200 and summary["errors"] == 3 and summary["actors"] == 1 and summary["cpus_per_actor"] == 2
    assert sum(summary["answers_per_tier"].values()) == 197


def test_run_with_ray_refuses_stdin_and_ray_options_without_ray(ray_cluster, windowed_cascade, capsys):
    assert main(["run", "--input", "-", "--models", str(windowed_cascade), "--ray"]) == 1
    assert "not stdin" in capsys.readouterr().err
    assert main(["run", "--input", "-", "--models", str(windowed_cascade), "--actors", "2"]) == 1
    assert "go with --ray" in capsys.readouterr().err


def test_run_with_ray_checks_overrides_before_any_actor_starts(ray_cluster, windowed_cascade, tmp_path, capsys):
    source = write_corpus(tmp_path / "in.txt", corpus_lines(50))
    assert main(["run", "--input", str(source), "--models", str(windowed_cascade), "--ray", "--thresholds", "0.5,0.6"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: thresholds: this cascade has 2 tiers, so 1 threshold(s) (the last tier has none); got 2"]


def test_classify_file_and_an_empty_file(ray_cluster, windowed_cascade, tmp_path):
    lines = corpus_lines(70)
    summary = classify_file(write_corpus(tmp_path / "in.txt", lines), tmp_path / "out.jsonl", windowed_cascade)
    assert_same_answers((tmp_path / "out.jsonl").read_text().splitlines(), local_json(windowed_cascade, lines))
    assert summary["count"] == 70
    assert classify_file(write_corpus(tmp_path / "empty.txt", [], final_newline=False), tmp_path / "none.jsonl", windowed_cascade)["count"] == 0
    assert (tmp_path / "none.jsonl").read_text() == ""


def test_a_dataset_with_pair_columns_gets_label_score_tier_columns(ray_cluster, windowed_cascade, tmp_path):
    import shutil

    folder = shutil.copytree(windowed_cascade, tmp_path / "pairs")
    raw = json.loads((folder / "cascade.json").read_text())
    (folder / "cascade.json").write_text(json.dumps({**raw, "text_columns": ["sentence1", "sentence2"]}))
    firsts, seconds = sentences(40, seed=1), sentences(40, seed=2)
    seconds[3] = ""
    rows = [{"id": i, "a": a, "b": b} for i, (a, b) in enumerate(zip(firsts, seconds))]
    out = sorted(classify(ray.data.from_items(rows), folder, text_column="a", pair_column="b", plan=ActorPlan(1, 1)).take_all(), key=lambda row: row["id"])
    with Cascade.from_dir(folder) as cascade:
        want = cascade.predict(list(zip(firsts, seconds)))
    assert [row["id"] for row in out] == list(range(40)) and out[0]["a"] == firsts[0]  # the dataset's own columns are kept
    assert [(row["label"], row["tier"], row["error"]) for row in out] == [(p.label, p.tier, p.error) for p in want]
    assert out[3]["error"] == "empty input" and out[3]["score"] is None


def test_a_killed_actor_costs_time_not_lines(ray_cluster, windowed_cascade, tmp_path):
    """Kill the actor while it holds a batch: Ray restarts it and retries the batch; the output is complete."""
    lines = corpus_lines(6 * WINDOW)
    source = write_corpus(tmp_path / "in.txt", lines)
    gate = tmp_path / "gate"
    gate.mkdir()
    gate_line = 3 * WINDOW  # in the fourth block
    dataset = classify(read_lines(source, WINDOW), windowed_cascade, plan=ActorPlan(1, 2), predictor_class=ray_gate.GatedPredictor, gate_dir=str(gate), gate_line=gate_line)
    got: list[str] = []
    # The main thread plays the operator; a consumer drives the run. The gate holds the actor (one serial UDF),
    # so nothing can finish until the kill: the kill lands while the batch is held.
    consumer = threading.Thread(target=lambda: got.extend(json.dumps(p.to_dict()) for p in ordered_predictions(dataset)))
    consumer.start()
    killed = int(wait_for(gate / "holding").read_text())
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: process_gone(killed))
    (gate / "released").touch()
    consumer.join(timeout=120)
    assert not consumer.is_alive()
    assert_same_answers(got, local_json(windowed_cascade, lines))


def test_the_default_plan_is_one_actor_with_every_core_of_the_node(ray_cluster):
    assert plan_actors() == ActorPlan(actors=1, cpus_per_actor=2)
    assert plan_actors(actors=2) == ActorPlan(actors=2, cpus_per_actor=1)
    assert plan_actors(cpus_per_actor=1) == ActorPlan(actors=2, cpus_per_actor=1)
    with pytest.raises(TangoEdgeError, match="hold at most 1 actors of 2 CPUs; asked for 2"):
        plan_actors(actors=2, cpus_per_actor=2)  # Ray would wait forever for the second
    with pytest.raises(TangoEdgeError, match="hold at most 0 actors of 4 CPUs"):
        plan_actors(cpus_per_actor=4)


def process_gone(pid: int) -> bool:
    """Exited: no /proc entry, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(path, timeout: float = 60.0):
    wait_until(path.exists, timeout)
    return path


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s")
        time.sleep(0.01)
