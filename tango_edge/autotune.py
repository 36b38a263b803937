"""`tango-edge autotune`: measure every tier's batch sizes and stream settings here and store the fastest, then
time the later tiers' streams on the whole cascade at the deferral shares calibration recorded.

Candidates are timed in interleaved rounds and compared by their medians (timing.py). Throughput is instances
per second through `Tier.logits` (tokenization included) on the inputs shipped with the cascade for this
purpose (`sample.txt`). The choice rule prefers small batches: the smallest batch size within 3% of the fastest
median, because a smaller later-tier batch fills sooner (lower latency for deferred inputs) and a 3%
difference is below what the medians can resolve here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Iterable, Mapping, NamedTuple, Sequence, TypeVar

import numpy as np

from .config import CascadeConfig
from .errors import TangoEdgeError
from .timing import SEED, instances_per_second, measure_rounds, pass_texts, summarize

SAMPLE_FILE = "sample.txt"
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
QUICK_BATCH_SIZES = (1, 2, 8)  # none equal to the defaults (64, 16), so a test can see the profile applied
TOLERANCE = 0.03  # sizes within 3% of the fastest median count as equally fast
PASS_SECONDS = 0.15  # aimed length of one timed pass at the warm-up rate
QUICK_PASS_SECONDS = 0.0  # --quick is a smoke run: each pass is just two batches of the largest size
MAX_PASS_SENTENCES = 2048
WARMUP_SENTENCES = 256
QUICK_WARMUP_SENTENCES = 16
WARMUP_BATCH_SIZE = 32

K = TypeVar("K", bound=Hashable)


class Setting(NamedTuple):
    """One way to run a tier: OpenVINO NUM_STREAMS (0 = the THROUGHPUT hint's choice) and the batch size."""

    streams: int
    batch_size: int


@dataclass(frozen=True)
class Candidate:
    """A setting of one tier (its index in the cascade), as timed in the rounds."""

    tier: int
    streams: int
    batch_size: int

    @property
    def setting(self) -> Setting:
        return Setting(self.streams, self.batch_size)


# ---- pure logic: candidates, rounds, summaries, the choice rule ----------------------------------------------


def candidate_batch_sizes(quick: bool = False) -> tuple[int, ...]:
    """Powers of two from 1 to 128, or three small sizes for --quick (a smoke run for tests)."""
    return QUICK_BATCH_SIZES if quick else BATCH_SIZES


def candidate_streams(cores: int, quick: bool = False) -> list[int]:
    """NUM_STREAMS values worth trying: auto (0), then 1, 2, 4 ... up to the core count (auto only for --quick,
    as each setting is one more compilation).

    Settings that OpenVINO resolves to the same stream count are merged later (see `compile_variants`).
    """
    if quick:
        return [0]
    streams = [0]
    count = 1
    while count <= max(1, cores):
        streams.append(count)
        count *= 2
    return streams


def within_tolerance(throughputs: Mapping[K, float], tolerance: float = TOLERANCE) -> list[K]:
    """The keys whose throughput is at least (1 - tolerance) x the best one."""
    if not throughputs:
        raise ValueError("no candidates to choose from")
    best = max(throughputs.values())
    return [key for key, value in throughputs.items() if value >= (1.0 - tolerance) * best]


def choose_batch_size(throughputs: Mapping[int, float], tolerance: float = TOLERANCE) -> int:
    """The smallest batch size whose throughput is within `tolerance` of the fastest one."""
    return min(within_tolerance(throughputs, tolerance))


def choose_setting(throughputs: Mapping[Setting, float], tolerance: float = TOLERANCE) -> Setting:
    """The smallest batch size within `tolerance` of the fastest setting; among its stream settings, the fastest."""
    near_best = within_tolerance(throughputs, tolerance)
    smallest = min(setting.batch_size for setting in near_best)
    return max((s for s in near_best if s.batch_size == smallest), key=lambda s: (throughputs[s], -s.streams))


def choose_streams(throughputs: Mapping[int, float], preferred: int, tolerance: float = TOLERANCE) -> int:
    """`preferred` (the tier's own choice) when within `tolerance` of the fastest, else the fastest."""
    near_best = within_tolerance(throughputs, tolerance)
    return preferred if preferred in near_best else max(near_best, key=lambda s: throughputs[s])


def pass_size(rate: float, largest_batch: int, seconds: float = PASS_SECONDS, cap: int = MAX_PASS_SENTENCES) -> int:
    """Sentences per timed pass: about `seconds` at the estimated rate, at least two batches of the largest size.

    Two batches of the largest candidate keep every stream busy at least once; the time target keeps a pass of
    a fast tier (tier 1 does thousands of sentences a second) long enough to time and one of a slow tier short.
    """
    wanted = int(round(rate * seconds)) if np.isfinite(rate) else cap
    return max(2 * largest_batch, min(cap, wanted))


# ---- measuring real tiers ---------------------------------------------------------------------------------------


def read_sample(directory: str | Path) -> list:
    """The representative inputs stored with the cascade (`sample.txt`, one per line; blank lines skipped).

    For pair tasks a line holds the two texts separated by a tab; it becomes a (first, second) pair.
    """
    path = Path(directory) / SAMPLE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TangoEdgeError(
            f"{path} is missing: autotune times the tiers on representative inputs stored with the cascade; "
            f"write a few hundred typical inputs there, one per line (e.g. sentences from the task's dev set)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TangoEdgeError(f"cannot read {path}: {exc}") from None
    sentences = [as_input(line) for line in lines if line.strip()]
    if not sentences:
        raise TangoEdgeError(f"{path} holds no sentences: write typical inputs there, one per line")
    return sentences


def as_input(line: str):
    """A sample line as a cascade input: a string, or a (first, second) pair when it holds one tab."""
    parts = line.strip().split("\t")
    return (parts[0].strip(), parts[1].strip()) if len(parts) == 2 else line.strip()


def resolved_streams(tier) -> int:
    """The NUM_STREAMS OpenVINO actually uses for a compiled tier (what "auto" became)."""
    return int(tier.compiled.get_property("NUM_STREAMS"))


def compile_variants(folder: Path, config: CascadeConfig, streams: Iterable[int], device: str, log: Callable[[str], None]) -> tuple[dict, dict]:
    """One compiled Tier per stream setting, dropping settings that resolve to the same stream count.

    "auto" is listed first, so when it resolves to, e.g., 2 streams, the explicit 2 is the one dropped.
    Returns ({setting: Tier}, {setting: resolved NUM_STREAMS}).
    """
    from .tier import Tier

    variants, resolved = {}, {}
    for setting in streams:
        tier = Tier(folder, max_length=config.max_length, device=device, streams=setting, inference_precision=config.inference_precision, tokenizer=config.tokenizer)
        count = resolved_streams(tier)
        twin = next((other for other, other_count in resolved.items() if other_count == count), None)
        if twin is not None:
            log(f"{folder.name}: NUM_STREAMS {streams_label(setting)} is the same as {streams_label(twin)} here; timed once")
            continue
        variants[setting], resolved[setting] = tier, count
    return variants, resolved


def streams_label(setting: int, resolved: int | None = None) -> str:
    if setting:
        return str(setting)
    return "auto" if resolved is None else f"auto({resolved})"


def warm_up(tier, sample: Sequence, sentences: int = WARMUP_SENTENCES) -> float:
    """Two passes left out of the choice (the first allocates, fills shape caches, spins up threads); returns the
    second one's rate, used to size the timed passes."""
    texts = pass_texts(sample, sentences)
    instances_per_second(tier, texts, WARMUP_BATCH_SIZE)
    return instances_per_second(tier, texts, WARMUP_BATCH_SIZE)


def stderr_log(message: str) -> None:
    print(f"autotune: {message}", file=sys.stderr, flush=True)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class PreparedTier:
    """A tier ready to time: its compiled variants, their resolved stream counts and the pass sentences."""

    variants: dict
    resolved: dict
    texts: list
    estimated_rate: float


def prepare_tier(folder: Path, config: CascadeConfig, sample: Sequence, sizes: Sequence[int], streams: Sequence[int], quick: bool, device: str, log: Callable[[str], None]) -> PreparedTier:
    """Compile the stream variants, warm each up, and size the timed pass from the warm-up rate."""
    log(f"compiling {folder.name} ...")
    variants, resolved = compile_variants(folder, config, streams, device, log)
    log(f"warming up {folder.name} ...")
    rate = max(warm_up(tier, sample, QUICK_WARMUP_SENTENCES if quick else WARMUP_SENTENCES) for tier in variants.values())
    texts = pass_texts(sample, pass_size(rate, max(sizes), QUICK_PASS_SECONDS if quick else PASS_SECONDS))
    log(f"{folder.name}: about {rate:.0f} sentences/s; {len(texts)} sentences per timed pass")
    return PreparedTier(variants, resolved, texts, rate)


def tier_report(index: int, prepared: PreparedTier, rates: dict[Candidate, list[float]]) -> tuple[Setting, dict]:
    """The chosen setting of one tier and the per-candidate summaries stored in the profile."""
    summaries = {c.setting: summarize(values) for c, values in rates.items() if c.tier == index}
    chosen = choose_setting({setting: summary["median"] for setting, summary in summaries.items()})
    renamed = {"median": "median_per_s", "min": "min_per_s", "max": "max_per_s"}
    rows = [
        {**setting._asdict(), **{renamed.get(k, k): v for k, v in summary.items()}, "rates_per_s": rates[Candidate(index, *setting)]}
        for setting, summary in sorted(summaries.items())
    ]
    report = {"pass_sentences": len(prepared.texts), "resolved_streams": {str(s): n for s, n in prepared.resolved.items()}, "chosen": chosen._asdict(), "candidates": rows}
    return chosen, report




def tune(directory: Path, device: str, rounds: int, quick: bool, log: Callable[[str], None] = stderr_log) -> tuple[dict, dict]:
    """Measure every candidate of every tier in interleaved rounds; returns (settings, measurements).

    settings: {"tiers": [{"batch_size": ..., "streams": ...}, ...]}, as the profile stores them.
    """
    started = time.perf_counter()
    config = CascadeConfig.load(directory)
    sample = read_sample(directory)
    sizes = candidate_batch_sizes(quick)
    streams = candidate_streams(cpu_count(), quick)
    log(f"{len(sample)} sample inputs; batch sizes {list(sizes)}; NUM_STREAMS {[streams_label(s) for s in streams]}")
    tiers = [prepare_tier(directory / t.dir, config, sample, sizes, streams, quick, device, log) for t in config.tiers]

    candidates = [Candidate(index, setting, size) for index, tier in enumerate(tiers) for setting in tier.variants for size in sizes]
    per_round = sum(len(tiers[c.tier].texts) / tiers[c.tier].estimated_rate for c in candidates)
    log(f"{len(candidates)} candidates x {rounds} rounds, roughly {per_round * rounds:.0f} s at the warm-up rates")
    rounds_started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - rounds_started
        log(f"round {done}/{total} done ({elapsed:.0f} s, about {elapsed / done * (total - done):.0f} s left)")

    def timed_pass(c: Candidate) -> float:
        return instances_per_second(tiers[c.tier].variants[c.streams], tiers[c.tier].texts, c.batch_size)

    rates = measure_rounds(candidates, timed_pass, rounds, SEED, progress)
    chosen, reports = [], {}
    for index, (tier_config, prepared) in enumerate(zip(config.tiers, tiers)):
        setting, reports[tier_config.dir] = tier_report(index, prepared, rates)
        chosen.append({"batch_size": setting.batch_size, "streams": setting.streams})
    settings = {"tiers": chosen}
    from .cascade import running_tiers

    cascade_reports = []
    thresholds = cascade_thresholds(config, [t.variants[c["streams"]] for t, c in zip(tiers, chosen)], sample, log)
    for index in running_tiers([*thresholds, None])[1:]:  # the tiers fed by an earlier one
        if len(tiers[index].variants) > 1:
            settings["tiers"][index]["streams"], report = tune_cascade_streams(directory, settings, thresholds, index, sample, list(tiers[index].variants), rounds, device, log)
            cascade_reports.append(report)
    measurements = {
        "unit": "instances/s, tokenization included",
        "rounds": rounds,
        "seed": SEED,
        "quick": quick,
        "tolerance": TOLERANCE,
        "sample_inputs": len(sample),
        "seconds": round(time.perf_counter() - started, 2),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tiers": reports,
    }
    if cascade_reports:
        measurements["cascade"] = cascade_reports
    return settings, measurements


def thresholds_at_shares(tiers: Sequence, temperatures: Sequence[float], texts: Sequence, shares: Sequence[float | None], stored: Sequence[float]) -> tuple[list[float], list[list[int]]]:
    """Per routing tier k, the threshold at which tier k passes on the share `shares[k]` of all `texts` (None:
    keep `stored[k]`), computed tier after tier on the inputs that reach it; and for every tier, the indices of
    the texts that reach it."""
    from .routing import threshold_for_cut, tier_outputs

    thresholds = list(stored)
    reaching = [list(range(len(texts)))]
    for k in range(len(tiers) - 1):
        remaining = reaching[-1]
        skipped = thresholds[k] > 1.0 and shares[k] is None
        if skipped or not remaining:  # everything that reaches it passes on
            reaching.append(remaining)
            continue
        tier = tiers[k]
        confidence, _ = tier_outputs(tier.logits(tier.encoder.encode([texts[i] for i in remaining]), 64), temperatures[k])
        if shares[k] is not None:
            order = np.argsort(confidence, kind="stable")
            cut = min(len(remaining), int(round(shares[k] * len(texts))))
            thresholds[k] = threshold_for_cut(confidence[order], cut)
        passes_all = thresholds[k] > 1.0  # the share asked for is all of them: the tier is skipped
        reaching.append([i for i, c in zip(remaining, confidence.tolist()) if passes_all or c < thresholds[k]])
    return thresholds, reaching


def cascade_thresholds(config: CascadeConfig, tiers: Sequence, sample: Sequence, log: Callable[[str], None] = stderr_log) -> list[float]:
    """Per routing tier, the threshold at which the sample defers the share calibration recorded (each tier's
    `deferral_rate`: the share of all inputs it passed on), else the stored threshold.

    The sample is training sentences, the easy cases: at the stored thresholds it defers a fraction of what
    real inputs do, and a cascade timed on it hardly uses the later tiers.
    """
    texts = pass_texts(sample, MAX_PASS_SENTENCES)
    routing = config.tiers[:-1]
    thresholds, _ = thresholds_at_shares(tiers, [t.temperature for t in routing], texts, [t.deferral_rate for t in routing], config.thresholds)
    for k, tier_config in enumerate(routing):
        if tier_config.deferral_rate is not None:
            log(f"cascade stage: tier {k + 1} at threshold {thresholds[k]:g} passes on {100 * tier_config.deferral_rate:.1f}% of the sample as calibration did (stored threshold {tier_config.threshold:g})")
    return thresholds


def tune_cascade_streams(directory: Path, settings: dict, thresholds: Sequence[float], index: int, sample: Sequence, streams: Sequence[int], rounds: int, device: str, log: Callable[[str], None] = stderr_log) -> tuple[int, dict]:
    """Tier `index`'s NUM_STREAMS chosen on the whole cascade at `thresholds`, with the tuned batch sizes.

    Timed alone, a later tier runs as fast on one stream (each request on every core) as on one per core;
    inside the cascade, the first tier's requests take cores from it mid-inference and a one-stream tier waits
    for its slowest thread (this stage on the shipped SST-2 cascade: 2486/s on one stream, 2824/s on two;
    docs/sst2/v1/autotune.txt). The tier's own choice stays unless another is more than the tolerance faster.
    """
    from .cascade import Cascade

    batch_sizes = [t["batch_size"] for t in settings["tiers"]]

    def engine(setting: int):
        chosen = [t["streams"] for t in settings["tiers"]]
        chosen[index] = setting
        return Cascade.from_dir(directory, device=device, use_profile=False, thresholds=thresholds, batch_sizes=batch_sizes, streams=chosen)

    engines = {s: engine(s) for s in streams}
    try:
        texts = pass_texts(sample, MAX_PASS_SENTENCES)
        for cascade in engines.values():  # warm-up
            list(cascade.predict_iter(texts[:256]))

        def timed_pass(s: int) -> float:
            started = time.perf_counter()
            for _ in engines[s].predict_iter(texts):
                pass
            return len(texts) / max(time.perf_counter() - started, 1e-9)

        log(f"cascade at thresholds {[round(t, 4) for t in thresholds]}: timing tier-{index + 1} NUM_STREAMS {[streams_label(s) for s in streams]}, {rounds} rounds")
        engines[streams[0]].reset_stats()
        rates = measure_rounds(list(streams), timed_pass, rounds, SEED)
        reach_rate = engines[streams[0]].stats()["tiers"][index]["reach_rate"]
    finally:
        for cascade in engines.values():
            cascade.close()
    summaries = {s: summarize(r) for s, r in rates.items()}
    chosen = choose_streams({s: v["median"] for s, v in summaries.items()}, settings["tiers"][index]["streams"])
    rows = [{"streams": s, "median_per_s": v["median"], "min_per_s": v["min"], "max_per_s": v["max"], "iqr_rel": v["iqr_rel"], "rates_per_s": rates[s]} for s, v in summaries.items()]
    return chosen, {"tier": index + 1, "thresholds": list(thresholds), "reach_rate": reach_rate, "pass_sentences": len(texts), "candidates": rows, "streams": chosen}


# ---- command -------------------------------------------------------------------------------------------------


def format_report(profile: dict) -> str:
    """The measurements as a table, one row per candidate, the chosen setting marked."""
    lines = [f"{'tier':6} {'streams':8} {'batch':>5} {'median/s':>10} {'min/s':>10} {'max/s':>10} {'IQR':>6}"]
    for name, report in profile["measurements"]["tiers"].items():
        chosen = Setting(**report["chosen"])
        for row in report["candidates"]:
            mark = "  <- chosen" if Setting(row["streams"], row["batch_size"]) == chosen else ""
            label = streams_label(row["streams"], report["resolved_streams"].get(str(row["streams"])))
            lines.append(f"{name:6} {label:8} {row['batch_size']:5d} {row['median_per_s']:10.1f} {row['min_per_s']:10.1f} {row['max_per_s']:10.1f} {100 * row['iqr_rel']:5.0f}%{mark}")
    for cascade in profile["measurements"].get("cascade", []):
        for row in cascade["candidates"]:
            mark = "  <- chosen" if row["streams"] == cascade["streams"] else ""
            label = f"t{cascade['tier']} {streams_label(row['streams'])}"
            lines.append(f"{'casc.':6} {label:8} {'':>5} {row['median_per_s']:10.1f} {row['min_per_s']:10.1f} {row['max_per_s']:10.1f} {100 * row['iqr_rel']:5.0f}%{mark}")
    chosen = ", ".join(f"tier {k + 1} batch {t['batch_size']} streams {streams_label(t['streams'])}" for k, t in enumerate(profile["settings"]["tiers"]))
    lines.append(f"chosen: {chosen} (smallest batch within {100 * TOLERANCE:.0f}% of the fastest median over {profile['measurements']['rounds']} rounds)")
    return "\n".join(lines)


def autotune_command(args) -> int:
    """Tune, write the profile, print it (a table, or the profile JSON with --json)."""
    from .profile import save_profile

    directory = Path(args.models)
    if not directory.is_dir():
        raise TangoEdgeError(f"model folder {directory} does not exist")
    if args.rounds < 5 and not args.quick:
        stderr_log(f"only {args.rounds} rounds: medians of fewer than 5 rounds are easily swayed by noise")
    settings, measurements = tune(directory, args.device, args.rounds, args.quick)
    path = save_profile(directory, settings, measurements, device=args.device)
    profile = json.loads(path.read_text(encoding="utf-8"))
    stderr_log(f"profile written to {path} ({measurements['seconds']:.0f} s); `tango-edge run` and the Python API use it from now on")
    if args.json:
        print(json.dumps(profile, indent=2))
    else:
        print(format_report(profile))
    return 0
