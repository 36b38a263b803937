"""The `tango-edge` command: `run` and `info` in process through `main`, and once through the console script."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import tiny_models
from tango_edge import Cascade
from tango_edge.cli import main

LONG = " ".join(["great"] * 5000)
# Raw lines of the input file: CRLF endings, an empty line, invalid UTF-8, a very long line, a blank line,
# and a last line without its newline.
RAW_LINES = [
    b"a gorgeous film with a great cast\r\n",
    b"\r\n",
    b"dull and boring from start to finish\n",
    b"\xff\xfe not utf-8\n",
    LONG.encode() + b"\r\n",
    b"   \n",
    "charming , funny and often affecting \u2013 caf\u00e9\n".encode(),
    b"an awful mess of a script , badly acted",
]
TEXTS = [line.rstrip(b"\r\n") for line in RAW_LINES]
ERRORS = {1: "empty input", 3: "invalid UTF-8 at byte 0", 5: "empty input"}


@pytest.fixture
def input_file(tmp_path):
    path = tmp_path / "input.txt"
    path.write_bytes(b"".join(RAW_LINES))
    return path


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def check_rows(rows: list[dict], expected: list[dict]) -> None:
    assert len(rows) == len(RAW_LINES) == len(expected)
    for i, (row, want) in enumerate(zip(rows, expected)):
        assert row.get("error") == ERRORS.get(i), (i, row)
        assert (row["label"], row["tier"], row.get("truncated", False)) == (want["label"], want["tier"], want.get("truncated", False)), (i, row, want)
        if want["score"] is not None:
            assert row["score"] == pytest.approx(want["score"], abs=1e-5)
    assert rows[4]["truncated"] is True and rows[4]["label"] is not None


@pytest.fixture(scope="module")
def expected(tiny_cascade):
    """The library's answers for the same lines (threshold from cascade.json; no tuning profile either way)."""
    with Cascade.from_dir(tiny_cascade, use_profile=False) as cascade:
        return [p.to_dict() for p in cascade.predict(TEXTS)]


def test_run_writes_one_json_line_per_input_line(tiny_cascade, input_file, expected, capsys):
    sigterm = signal.getsignal(signal.SIGTERM)
    assert main(["run", "--input", str(input_file), "--models", str(tiny_cascade)]) == 0
    out, err = capsys.readouterr()
    check_rows(json_lines(out), expected)
    assert f"{len(RAW_LINES)} lines: 5 answered, 3 errors, 1 truncated" in err
    assert signal.getsignal(signal.SIGTERM) == sigterm  # restored


def test_run_output_file_and_json_summary(tiny_cascade, input_file, expected, tmp_path, capsys):
    target = tmp_path / "out.jsonl"
    assert main(["run", "--input", str(input_file), "--models", str(tiny_cascade), "--output", str(target), "--json"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    check_rows(json_lines(target.read_text(encoding="utf-8")), expected)
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["count"] == len(RAW_LINES)
    assert (summary["answered"], summary["errors"], summary["truncated"]) == (5, 3, 1)
    assert summary["threshold"] == 0.8
    assert summary["deferred"] == sum(1 for row in expected if row["tier"] == 2)


@pytest.mark.parametrize("threshold, tier", [("0", 1), ("1.5", 2)])
def test_run_threshold_option(tiny_cascade, input_file, capsys, threshold, tier):
    assert main(["run", "--input", str(input_file), "--models", str(tiny_cascade), "--threshold", threshold, "--json"]) == 0
    out, err = capsys.readouterr()
    rows = json_lines(out)
    assert len(rows) == len(RAW_LINES)
    assert {row["tier"] for i, row in enumerate(rows) if i not in ERRORS} == {tier}
    assert json.loads(err.strip().splitlines()[-1])["threshold"] == float(threshold)


def _single_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_run_missing_input_file(tiny_cascade, tmp_path, capsys):
    code = main(["run", "--input", str(tmp_path / "nope.txt"), "--models", str(tiny_cascade)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "cannot read input" in _single_error_line(err) and "nope.txt" in err


def test_run_unwritable_output(tiny_cascade, input_file, tmp_path, capsys):
    code = main(["run", "--input", str(input_file), "--models", str(tiny_cascade), "--output", str(tmp_path / "no" / "such" / "dir.jsonl")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "cannot write output" in _single_error_line(err)


def test_run_missing_models_folder(input_file, tmp_path, capsys):
    sigterm = signal.getsignal(signal.SIGTERM)
    code = main(["run", "--input", str(input_file), "--models", str(tmp_path / "no-models")])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "does not exist" in _single_error_line(err)
    assert signal.getsignal(signal.SIGTERM) == sigterm  # a failed load leaves no handler of ours behind


def test_run_broken_models_folder(tiny_cascade, input_file, tmp_path, capsys):
    folder = tmp_path / "cascade"
    shutil.copytree(tiny_cascade, folder)
    (folder / "cascade.json").write_text('{"threshold": "abc"}')
    code = main(["run", "--input", str(input_file), "--models", str(folder)])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "invalid tiers[0].threshold='abc'" in _single_error_line(err)


@pytest.mark.parametrize("value", ["-1", "abc", "nan"])
def test_run_bad_threshold_is_a_usage_error(tiny_cascade, input_file, capsys, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--input", str(input_file), "--models", str(tiny_cascade), "--threshold", value])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "argument --threshold" in err and "usage:" in err


def test_info_json_lists_both_tiers(tiny_cascade, capsys):
    assert main(["info", "--models", str(tiny_cascade), "--json"]) == 0
    out, _ = capsys.readouterr()
    info = json.loads(out)
    assert [t["tier"] for t in info["tiers"]] == [1, 2]
    for tier in info["tiers"]:
        assert tier["folder"].endswith(f"tier{tier['tier']}") and tier["runs"]
        assert "input_ids" in tier["inputs"]
    assert info["labels"] == ["negative", "positive"] and info["pair_task"] is False
    assert info["tiers"][1]["shares_tokens_with_previous"] is True
    assert info["tiers"][0]["threshold"] == 0.8 and info["tiers"][1]["threshold"] is None
    assert info["config"]["version"] == 2 and info["config"]["tiers"][0]["threshold"] == 0.8
    assert info["device"]["name"]


def test_info_three_tiers_says_which_run(three_tier_cascade, capsys):
    assert main(["info", "--models", str(three_tier_cascade)]) == 0
    out = capsys.readouterr().out
    assert "tier 3" in out and "threshold 0.7" in out and "threshold 0.8" in out
    assert main(["info", "--models", str(three_tier_cascade), "--json"]) == 0
    assert [t["runs"] for t in json.loads(capsys.readouterr().out)["tiers"]] == [True, True, True]


def test_info_missing_models_folder(tmp_path, capsys):
    assert main(["info", "--models", str(tmp_path / "none")]) == 1
    _, err = capsys.readouterr()
    assert "does not exist" in _single_error_line(err)


# ---- the installed console script --------------------------------------------------------------------


@pytest.fixture(scope="module")
def script():
    path = shutil.which("tango-edge")
    assert path, "the tango-edge console script is not installed"
    return path


def test_console_script_reads_stdin(script, tiny_cascade, expected):
    proc = subprocess.run([script, "run", "--input", "-", "--models", str(tiny_cascade), "--json"], input=b"".join(RAW_LINES), capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    check_rows(json_lines(proc.stdout.decode()), expected)
    assert json.loads(proc.stderr.decode().strip().splitlines()[-1])["count"] == len(RAW_LINES)


def test_console_script_exit_codes(script, tiny_cascade, tmp_path):
    missing = subprocess.run([script, "run", "--input", str(tmp_path / "nope.txt"), "--models", str(tiny_cascade)], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "cannot read input" in _single_error_line(missing.stderr)
    usage = subprocess.run([script, "run", "--input", "x", "--threshold", "abc"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "argument --threshold" in usage.stderr
    no_command = subprocess.run([script], capture_output=True, text=True, timeout=300)
    assert no_command.returncode == 2 and "usage:" in no_command.stderr


def test_run_pair_task_reads_two_tab_separated_texts_a_line(tiny_cascade, tmp_path, capsys):
    """A pair task's line is first text, tab, second text; a line without exactly one tab gets an error, in place."""
    folder = shutil.copytree(tiny_cascade, tmp_path / "pairs")
    raw = json.loads((folder / "cascade.json").read_text())
    (folder / "cascade.json").write_text(json.dumps({**raw, "text_columns": ["sentence1", "sentence2"]}))
    lines = ["a great film\tdull and boring", "no tab here", "charming\tfunny\textra", "an awful mess\ta gorgeous film"]
    source = tmp_path / "pairs.tsv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["run", "--input", str(source), "--models", str(folder)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(out) == 4
    assert out[1]["error"] == "expected two texts separated by one tab, found 0 tabs" and out[2]["error"].endswith("found 2 tabs")
    with Cascade.from_dir(folder) as cascade:
        want = cascade.predict([("a great film", "dull and boring"), ("an awful mess", "a gorgeous film")])
    for got, prediction in zip((out[0], out[3]), want):
        assert (got["label"], got["tier"]) == (prediction.label, prediction.tier) and got["score"] == pytest.approx(prediction.score, abs=1e-5)


def test_readme_pair_example_labels_every_pair_of_the_shipped_mrpc_sample(capsys):
    """The README's `tango-edge run --models models/mrpc --input models/mrpc/sample.txt`, on the shipped cascade:
    a line of output per tab-separated pair, in order, each labelled by one of the two tiers."""
    models = tiny_models.REPO / "models" / "mrpc"
    pairs = [tuple(line.split("\t")) for line in (models / "sample.txt").read_text(encoding="utf-8").splitlines()]
    assert main(["run", "--models", str(models), "--input", str(models / "sample.txt")]) == 0
    out = json_lines(capsys.readouterr().out)
    assert len(out) == len(pairs) and not [row for row in out if "error" in row]
    assert {row["tier"] for row in out} == {1, 2}  # the shipped threshold defers some pairs, not all
    with Cascade.from_dir(models) as cascade:
        first = cascade.predict(pairs[:8])
    assert [(row["label"], row["tier"]) for row in out[:8]] == [(p.label, p.tier) for p in first]


def test_source_tree_without_the_compiled_core_says_what_to_run(tmp_path):
    """Importing a copy of tango_edge/ that has no _core fails with one line naming the command."""
    import subprocess
    import sys

    import tango_edge

    copy = shutil.copytree(Path(tango_edge.__file__).parent, tmp_path / "tango_edge", ignore=shutil.ignore_patterns("_core*", "models", "__pycache__"))
    assert not list(copy.glob("_core*"))
    # The editable install's finder would send `tango_edge` to the built checkout: drop it, so the copy is imported.
    code = "import sys; sys.meta_path = [f for f in sys.meta_path if 'Redirecting' not in type(f).__name__]; sys.path.insert(0, '.'); import tango_edge"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: tango_edge._core is not built") and "pip install -e ." in last
