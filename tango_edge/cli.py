"""The `tango-edge` command: run, info, autotune, serve, calibrate, evaluate.

stdout carries data only; logs, notes, progress and summaries go to stderr. Known errors are one line
(set TANGO_EDGE_DEBUG=1 for the traceback); exit 1 for runtime errors, 2 for usage errors, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from .data import line_text
from .errors import TangoEdgeError

EXAMPLES = """examples:
  tango-edge run --input reviews.txt                      # shipped SST-2 cascade, JSON lines on stdout
  tango-edge run --input reviews.txt --output out.jsonl --threshold 0.8 --json
  tango-edge run --models three_tiers/ --input reviews.txt --thresholds 0.7,0.9
  tango-edge run --models models/mrpc --input pairs.tsv  # pair task: two tab-separated texts a line
  tango-edge info
  tango-edge autotune                                     # once per machine: tune batch sizes
  tango-edge calibrate --data dev.tsv --target 0.99 --plots plots/
  tango-edge evaluate --models models/mrpc --data test.tsv  # held-out metrics at the stored thresholds
  tango-edge serve --port 8080                            # TEI-style HTTP: POST /predict {"inputs": "..."}
"""


def default_models_dir() -> Path:
    """$TANGO_EDGE_MODELS, else the SST-2 cascade shipped with the package (or with the source checkout)."""
    if os.environ.get("TANGO_EDGE_MODELS"):
        return Path(os.environ["TANGO_EDGE_MODELS"])
    here = Path(__file__).resolve().parent
    for candidate in (here / "models" / "sst2", here.parent / "models" / "sst2"):
        if (candidate / "cascade.json").exists():
            return candidate
    return here.parent / "models" / "sst2"


def threshold_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0 (0 = answer everything at that tier, above 1 = skip it)")
    return value


def thresholds_arg(text: str) -> list[float]:
    return [threshold_arg(part.strip()) for part in text.split(",")]


def batch_sizes_arg(text: str) -> list[int]:
    return [positive_int(part.strip()) for part in text.split(",")]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def share_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1], e.g. 0.99 for 99% of the last tier's metric")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tango-edge", description="Cascaded text classification on Intel CPUs (OpenVINO): cheap tiers answer what they are sure of.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_models(p):
        p.add_argument("--models", type=Path, default=None, help="cascade folder (default: the shipped models/sst2)")
        p.add_argument("--device", default="CPU", help="OpenVINO device (default: CPU)")

    run = sub.add_parser("run", help="classify every line of a text file", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--input", required=True, help="text file, one input per line ('-' for stdin); for a pair task, two texts separated by a tab")
    run.add_argument("--output", default=None, help="write JSON lines here instead of stdout")
    add_models(run)
    run.add_argument("--threshold", type=threshold_arg, default=None, help="the first tier's threshold: defer below this confidence (default: cascade.json)")
    run.add_argument("--thresholds", type=thresholds_arg, default=None, help="every tier's threshold but the last's, comma-separated (0 = answer all there, above 1 = skip the tier)")
    run.add_argument("--batch-sizes", type=batch_sizes_arg, default=None, help="one batch size per tier, comma-separated (default: the autotune profile)")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON (on stderr)")
    run.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    ray = run.add_argument_group("Ray (the [ray] extra)")
    ray.add_argument("--ray", action="store_true", help="classify on Ray Data actors (a local Ray instance, or the cluster at --address); same output, in input order")
    ray.add_argument("--address", default=None, help="Ray cluster address, e.g. ray://head:10001 or auto (default: start Ray on this machine)")
    ray.add_argument("--actors", type=positive_int, default=None, help="cascade actors (default: one per node)")
    ray.add_argument("--cpus-per-actor", type=positive_int, default=None, help="CPUs per actor (default: all of a node's, as the tuning profile assumes)")

    info = sub.add_parser("info", help="models, inputs, batch sizes in use and CPU capabilities")
    add_models(info)
    info.add_argument("--json", action="store_true")

    tune = sub.add_parser("autotune", help="measure batch sizes and streams on this machine and store a profile")
    add_models(tune)
    tune.add_argument("--rounds", type=positive_int, default=5, help="interleaved timing rounds; each candidate's median over them is compared (default 5)")
    tune.add_argument("--quick", action="store_true", help="3 small batch sizes, automatic streams only, tiny passes: a smoke run for tests, not a tuning")
    tune.add_argument("--json", action="store_true", help="print the profile as JSON on stdout instead of the table")

    srv = sub.add_parser("serve", help="serve the cascade over HTTP with TEI's /predict API (needs the [serve] extra)")
    add_models(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed at start)")
    srv.add_argument("--thresholds", type=thresholds_arg, default=None, help="every tier's threshold but the last's (default: cascade.json)")
    srv.add_argument("--max-wait-ms", type=float, default=None, help="longest a request waits for a batch at a tier (default: cascade.json)")
    srv.add_argument("--max-concurrent-requests", type=positive_int, default=512, help="requests in flight before 429 (default 512)")
    srv.add_argument("--max-client-batch-size", type=positive_int, default=32, help="inputs per request before 413 (default 32)")
    srv.add_argument("--payload-limit", type=positive_int, default=2_000_000, help="request body bytes before 413 (default 2000000)")

    cal = sub.add_parser("calibrate", help="choose the thresholds on labelled data; print the paper's tables")
    add_models(cal)
    cal.add_argument("--data", required=True, help="labelled TSV file (header row; columns from cascade.json)")
    cal.add_argument("--target", type=share_arg, default=0.99, help="share of the last tier's metric to keep, in (0, 1] (default 0.99)")
    cal.add_argument("--json", dest="json_out", default=None, help="write all results to this JSON file")
    cal.add_argument("--plots", default=None, help="save the figures (PNG) in this folder (needs matplotlib)")
    cal.add_argument("--no-write", action="store_true", help="do not update cascade.json")
    cal.add_argument("--no-temperature", action="store_true", help="skip temperature scaling (writes temperature 1)")
    cal.add_argument("--rounds", type=positive_int, default=3, help="interleaved timing rounds for the throughput figures (default 3)")
    cal.add_argument("--early-exit", default=None, metavar="DIR", help="also sweep this early-exit model (DeeBERT, from scripts/deebert.py, on the last tier's model) and add it to Table 2 and Fig. 2")

    ev = sub.add_parser("evaluate", help="the cascade's and each tier's metrics on held-out labelled data, at the stored thresholds")
    add_models(ev)
    ev.add_argument("--data", required=True, help="labelled TSV file (header row; columns from cascade.json), not the one calibrate chose the thresholds on")
    ev.add_argument("--thresholds", type=thresholds_arg, default=None, help="every tier's threshold but the last's (default: cascade.json)")
    ev.add_argument("--json", dest="json_out", default=None, help="also write the results to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.models is None:
        args.models = default_models_dir()
    try:
        if args.command == "run":
            return run_command(args)
        if args.command == "info":
            return info_command(args)
        if args.command == "serve":
            return serve_command(args)
        if args.command == "autotune":
            from .autotune import autotune_command

            return autotune_command(args)
        if args.command == "evaluate":
            from .evaluate import evaluate_command

            return evaluate_command(args)
        from .calibrate import calibrate_command

        return calibrate_command(args)
    except TangoEdgeError as exc:
        if os.environ.get("TANGO_EDGE_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which has gone: not an error
        sys.stderr.close()
        return 0


def load_cascade(args, **overrides):
    from .cascade import Cascade

    cascade = Cascade.from_dir(args.models, device=args.device, **overrides)
    if cascade.profile_note:
        print(f"note: {cascade.profile_note}", file=sys.stderr)
    return cascade


def _open_input(path: str):
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise TangoEdgeError(f"cannot read input {path}: {exc.strerror}") from None


class _Interrupt:
    """Ctrl-C / SIGTERM without losing a line.

    The handler only records the request; the output loop stops after the line it is writing, so every answer
    handed out is written exactly once. While the input is blocked reading (a terminal or a pipe), no answer is
    in flight, so the handler raises there to stop at once.
    """

    def __init__(self):
        self.requested = False
        self.reading = False

    def __call__(self, signum, frame):
        self.requested = True
        if self.reading:
            raise KeyboardInterrupt

    def lines(self, handle):
        """Raw input lines without their end-of-line; decoding (and its errors) is per line, in the cascade."""
        while True:
            self.reading = True
            try:
                if self.requested:
                    raise KeyboardInterrupt
                raw = handle.readline()
            finally:
                self.reading = False
            if not raw:
                return
            yield line_text(raw)


class _Progress:
    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, stats_fn) -> None:
        now = time.perf_counter()
        if self.enabled and now - self.last > 0.5:
            self.last = now
            deferral = stats_fn().get("deferral_rate")
            deferred = "" if deferral is None else f"  deferred {100 * deferral:.1f}%"
            print(f"\r{done} lines  {done / (now - self.started):.0f}/s{deferred}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


class _LocalRun:
    """`run` on this process's cascade: lines read lazily from a file or stdin."""

    def __init__(self, args, interrupt: "_Interrupt", handle):
        self.handle = handle
        self.cascade = load_cascade(args, threshold=args.threshold, thresholds=args.thresholds, batch_sizes=args.batch_sizes)
        self.stream = self.cascade.predict_iter(interrupt.lines(self.handle))

    def __iter__(self):
        return iter(self.stream)

    def finished(self):
        return self.stream.finished()

    def close(self) -> None:
        self.cascade.close()

    def stats(self) -> dict:
        return self.cascade.stats()

    def summary(self) -> tuple[dict, str]:
        summary = self.cascade.stats()
        return summary, format_summary(summary)


class _RayRun:
    """`run --ray`: the file's lines on Ray Data actors, answers back in input order."""

    def __init__(self, args, interrupt: "_Interrupt"):
        from .ray.files import FileRun

        self.interrupt = interrupt
        self.run = FileRun(args.input, args.models, address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor, device=args.device, threshold=args.threshold, thresholds=args.thresholds, batch_sizes=args.batch_sizes)
        self.run.__enter__()

    def __iter__(self):
        answers = iter(self.run)
        while True:
            self.interrupt.reading = True  # waiting on Ray holds no answer: Ctrl-C may stop right here
            try:
                if self.interrupt.requested:
                    raise KeyboardInterrupt
                prediction = next(answers, None)
            finally:
                self.interrupt.reading = False
            if prediction is None:
                return
            yield prediction

    def finished(self):
        return []  # every answer that is next in order has been handed out already

    def close(self) -> None:
        self.run.__exit__(None, None, None)

    def stats(self) -> dict:
        return {}  # the actors' statistics stay with them; the summary counts answers per tier

    def summary(self) -> tuple[dict, str]:
        s = self.run.summary()
        tiers = ", ".join(f"tier {tier}: {n}" for tier, n in s["answers_per_tier"].items())
        return s, (
            f"{s['count']} lines: {s['errors']} errors, {s['truncated']} truncated; answers {tiers or 'none'}\n"
            f"throughput {s['throughput_per_s']:.1f}/s over {s['seconds']:.2f} s on Ray ({s['address']}): {s['actors']} actors x {s['cpus_per_actor']} CPUs"
        )


def run_command(args) -> int:
    if args.threshold is not None and args.thresholds is not None:
        raise TangoEdgeError("give --threshold (the first tier's) or --thresholds (all of them), not both")
    if not args.ray and (args.address or args.actors or args.cpus_per_actor):
        raise TangoEdgeError("--address, --actors and --cpus-per-actor go with --ray")
    if args.ray and args.input == "-":
        raise TangoEdgeError("--ray reads a file (each worker reads its own share of the lines), not stdin")
    # Before loading models or starting Ray: a typo fails fast.
    handle = _open_input(args.input)
    if args.ray:
        handle.close()  # each actor reads its own lines
    if args.output:
        try:
            out = open(args.output, "w", encoding="utf-8")
        except OSError as exc:
            raise TangoEdgeError(f"cannot write output {args.output}: {exc.strerror}") from None
    else:
        out = sys.stdout
    interrupt = _Interrupt()
    try:
        source = _RayRun(args, interrupt) if args.ray else _LocalRun(args, interrupt, handle)
    except BaseException:
        if out is not sys.stdout:
            out.close()
        raise
    written = 0
    progress = _Progress(sys.stderr.isatty() and not args.no_progress)

    def write(prediction) -> None:
        nonlocal written
        out.write(json.dumps(prediction.to_dict()) + "\n")
        written += 1

    # Installed once the models loaded, so the `finally` that restores the handlers always runs.
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for prediction in source:
            write(prediction)
            progress.update(written, source.stats)
            if interrupt.requested:
                break
        if interrupt.requested:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        for prediction in source.finished():  # what is complete and next in order
            write(prediction)
        progress.close()
        print(f"interrupted: wrote the first {written} results in input order", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `| head`: the reader has gone, nothing to report
        sys.stderr.close()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if out is not sys.stdout:
            out.close()
        else:
            out.flush()
        source.close()
    progress.close()
    summary, text = source.summary()
    print(json.dumps(summary) if args.json else text, file=sys.stderr)
    return 0


def format_summary(s: dict) -> str:
    lat = s["latency_ms"]
    thresholds = ", ".join(f"{t:g}" for t in s["thresholds"])
    tiers = ", ".join(
        f"tier {t['tier']}: {t['answers']} answers, {t['batches']} batches (mean {t['mean_batch_size']:.1f})" for t in s["tiers"] if t["items"]
    )
    return (
        f"{s['count']} lines: {s['answered']} answered, {s['errors']} errors, {s['truncated']} truncated; "
        f"deferred {s['deferred']} ({100 * s['deferral_rate']:.1f}%) past the first tier, thresholds {thresholds}\n"
        f"throughput {s['throughput_per_s']:.1f}/s over {s['seconds']:.2f} s; {tiers or 'no batches'}; "
        f"latency p50 {lat.get('p50_ms', 0):.1f} ms, p95 {lat.get('p95_ms', 0):.1f} ms, p99 {lat.get('p99_ms', 0):.1f} ms"
    )


def serve_command(args) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise TangoEdgeError(f"tango-edge serve needs the [serve] extra ({exc.name} is missing): pip install 'tango-edge[serve]'") from None
    from .serve.app import ServerLimits, serve

    limits = ServerLimits(args.max_concurrent_requests, args.max_client_batch_size, args.payload_limit)
    serve(args.models, host=args.host, port=args.port, limits=limits, thresholds=args.thresholds, max_wait_ms=args.max_wait_ms, device=args.device)
    return 0


def info_command(args) -> int:
    from .tier import ov_core

    with load_cascade(args) as cascade:
        info = cascade.describe()
    core = ov_core()
    info["device"] = {
        "name": core.get_property(args.device, "FULL_DEVICE_NAME"),
        "capabilities": list(core.get_property(args.device, "OPTIMIZATION_CAPABILITIES")),
    }
    import openvino

    info["openvino"] = openvino.get_version()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg = info["config"]
    kind = "pairs" if info["pair_task"] else "single texts"
    print(f"cascade   {info['directory']}  task={cfg['task']} ({kind}, metric {cfg['metric']}) labels={info['labels']}  max_length {cfg['max_length']}")
    print(f"batches   {info['profile']}")
    for tier in info["tiers"]:
        routing = "answers all that reach it" if tier["threshold"] is None else f"threshold {tier['threshold']:g} temperature {tier['temperature']:g}"
        shared = ", tokens shared with the tier before" if tier["shares_tokens_with_previous"] else ""
        skipped = "" if tier["runs"] else "  (not run at these thresholds)"
        print(f"tier {tier['tier']}    {tier['folder']}  {routing}  batch {tier['batch_size']}  streams {tier['streams']}  inputs {tier['inputs']}  tokenizer {tier['tokenizer']}{shared}  {tier['model_size_mb']} MB{skipped}")
    print(f"device    {info['device']['name']}  [{', '.join(info['device']['capabilities'])}]  OpenVINO {info['openvino']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
