"""Ctrl-C during `tango-edge run`: the finished results are written, in input order, and nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import conftest


def test_sigint_flushes_finished_results_in_order(tiny_cascade, tmp_path):
    lines = conftest.sentences(200_000, seed=4)  # far more than finishes before the signal
    source = tmp_path / "big.txt"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tango_edge.cli", "run", "--input", str(source), "--models", str(tiny_cascade), "--output", str(out), "--threshold", "0.7"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while (not out.exists() or out.stat().st_size < 10_000) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert "interrupted: wrote the first" in stderr and "Traceback" not in stderr
    written = out.read_text().splitlines()
    assert 0 < len(written) < len(lines)
    reported = int(stderr.split("interrupted: wrote the first ")[1].split()[0])
    assert reported == len(written)
    # What was written is the answer for the first lines, in order: compare with a fresh run on that prefix.
    prefix = tmp_path / "prefix.txt"
    prefix.write_text("\n".join(lines[: len(written)]) + "\n")
    again = subprocess.run([*command[:5], str(prefix), *command[6:8], "--threshold", "0.7"], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert [json.loads(x)["label"] for x in written] == [json.loads(x)["label"] for x in again.stdout.splitlines()]
