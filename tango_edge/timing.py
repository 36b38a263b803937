"""Noise-aware timing, shared by `autotune` and `calibrate`.

The machines this runs on are noisy (2-10x throughput swings within minutes on shared VMs), so candidates are
never timed one after the other: round r times every candidate once, in a shuffled order, and each candidate's
figure is its median over the rounds. A slow spell then hits all candidates of a round alike and the median
discards it. The spread over rounds is reported so a user can see how much to trust the figures.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np

from .routing import Costs

SEED = 0  # shuffles are reproducible: the same rounds in the same orders on every run
COST_PASS_SENTENCES = (2048, 256)  # per timed pass of the first tier, and of every later (slower) tier

K = TypeVar("K", bound=Hashable)


def round_schedule(candidates: Sequence[K], rounds: int, seed: int = SEED) -> list[list[K]]:
    """`rounds` lists, each holding every candidate once in its own shuffled order (reproducible by seed)."""
    rng = random.Random(seed)
    schedule = []
    for _ in range(rounds):
        order = list(candidates)
        rng.shuffle(order)
        schedule.append(order)
    return schedule


def summarize(rates: Sequence[float]) -> dict:
    """Median of the per-round rates and their spread relative to it (min/max and interquartile range)."""
    if not rates:
        raise ValueError("no measurements to summarize")
    values = np.asarray(rates, dtype=np.float64)
    median = float(np.median(values))
    q1, q3 = np.percentile(values, [25, 75])
    relative = (lambda x: float(x) / median) if median > 0 else (lambda x: float("nan"))
    return {
        "median": median,
        "min": float(values.min()),
        "max": float(values.max()),
        "iqr_rel": relative(q3 - q1),
        "range_rel": relative(values.max() - values.min()),
        "rounds": len(values),
    }


def measure_rounds(
    candidates: Sequence[K],
    timed_pass: Callable[[K], float],
    rounds: int,
    seed: int = SEED,
    progress: Callable[[int, int], None] | None = None,
) -> dict[K, list[float]]:
    """Each candidate's rate in every round (round r runs every candidate once, in a shuffled order).

    `timed_pass(candidate)` returns instances per second; `progress(round, rounds)` is called after each round.
    """
    rates: dict[K, list[float]] = {candidate: [] for candidate in candidates}
    for index, order in enumerate(round_schedule(candidates, rounds, seed), start=1):
        for candidate in order:
            rates[candidate].append(timed_pass(candidate))
        if progress is not None:
            progress(index, rounds)
    return rates


def pass_texts(sample: Sequence, count: int, seed: int = SEED) -> list:
    """`count` sample inputs in a fixed shuffled order, cycling through the sample when it is shorter."""
    if not sample:
        raise ValueError("the sample is empty")
    order = list(sample)
    random.Random(seed).shuffle(order)
    repeats = -(-count // len(order))
    return (order * repeats)[:count]


def instances_per_second(tier, texts: Sequence, batch_size: int) -> float:
    """One timed pass: tokenize `texts` and run them through the tier's AsyncInferQueue at `batch_size`."""
    started = time.perf_counter()
    encoded = tier.encoder.encode(list(texts))
    tier.logits(encoded, batch_size)
    return len(texts) / max(time.perf_counter() - started, 1e-9)


def measure_costs(tiers: Sequence, texts: Sequence, tuned_batch_sizes: Sequence[int], rounds: int, progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Costs], dict]:
    """Seconds per instance of each tier alone (tokenization included) at its tuned batch size and at 1.

    Median of `rounds` interleaved rounds; returns ({"tuned": Costs, "batch1": Costs}, per-setting summaries
    keyed "tier<k>@<batch size>").
    """
    counts = [COST_PASS_SENTENCES[0 if k == 0 else 1] for k in range(len(tiers))]
    timing_texts = [pass_texts(texts, min(len(texts), count)) for count in counts]
    candidates = [(k, size) for k in range(len(tiers)) for size in sorted({1, tuned_batch_sizes[k]})]
    for k, size in candidates:  # warm-up: first contact with each batch shape
        instances_per_second(tiers[k], timing_texts[k][:64], size)
    rates = measure_rounds(candidates, lambda c: instances_per_second(tiers[c[0]], timing_texts[c[0]], c[1]), rounds, progress=progress)
    summaries = {c: summarize(rates[c]) for c in candidates}
    seconds = {c: 1.0 / s["median"] for c, s in summaries.items()}
    sizes = tuple(tuned_batch_sizes)
    costs = {
        "tuned": Costs(tuple(seconds[k, sizes[k]] for k in range(len(tiers))), sizes),
        "batch1": Costs(tuple(seconds[k, 1] for k in range(len(tiers))), (1,) * len(tiers)),
    }
    report = {f"tier{k + 1}@{size}": {**summary, "seconds_per_instance": seconds[k, size]} for (k, size), summary in summaries.items()}
    return costs, report


def sequential_seconds(request, tier, texts: Sequence) -> float:
    """Seconds per instance of a tier run the way an early-exit model runs: one input at a time on one synchronous
    request (`request`, from the tier's model compiled for latency); tokenization included, all texts at once."""
    started = time.perf_counter()
    for one in tier.encoder.encode(list(texts)):
        request.infer(tier.inputs([one]))
    return (time.perf_counter() - started) / len(texts)


def measure_early_exit(model, last_tier, texts: Sequence, tuned_batch_size: int, rounds: int, thresholds: dict[str, float], progress: Callable[[int, int], None] | None = None) -> dict:
    """An early-exit model's cost per layer at batch size 1, and real exiting runs at `thresholds`, interleaved
    with the last tier alone: one input at a time on one request as the early-exit model runs ("sequential", its
    speedups' reference), and at batch size 1 and its tuned size on asynchronous requests (the cascade's).

    Per candidate, the median over `rounds` rounds: "stages" gives seconds per instance per layer (tokenization in
    the first), every other candidate seconds per instance.
    """
    from .tier import ov_core

    timing_texts = pass_texts(texts, min(len(texts), COST_PASS_SENTENCES[1]))
    last_sizes = sorted({1, tuned_batch_size})
    latency = ov_core().compile_model(last_tier.model, last_tier.device, {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": last_tier.inference_precision})
    request = latency.create_infer_request()
    candidates = ["stages", "last@sequential", *(f"last@{size}" for size in last_sizes), *(f"exit@{name}" for name in thresholds)]
    model.stage_seconds(timing_texts[:16])  # warm-up
    sequential_seconds(request, last_tier, timing_texts[:16])
    for size in last_sizes:
        instances_per_second(last_tier, timing_texts[:64], size)
    stage_rounds: list[np.ndarray] = []
    seconds: dict[str, list[float]] = {c: [] for c in candidates if c != "stages"}
    for index, order in enumerate(round_schedule(candidates, rounds), start=1):
        for candidate in order:
            if candidate == "stages":
                stage_rounds.append(model.stage_seconds(timing_texts))
            elif candidate == "last@sequential":
                seconds[candidate].append(sequential_seconds(request, last_tier, timing_texts))
            elif candidate.startswith("last@"):
                seconds[candidate].append(1.0 / instances_per_second(last_tier, timing_texts, int(candidate[5:])))
            else:
                started = time.perf_counter()
                model.predict(timing_texts, thresholds[candidate[5:]])
                seconds[candidate].append((time.perf_counter() - started) / len(timing_texts))
        if progress is not None:
            progress(index, rounds)
    stages = np.asarray(stage_rounds)
    median = {c: float(np.median(v)) for c, v in seconds.items()}
    return {
        "stage_seconds": np.median(stages, axis=0).tolist(),
        "stage_total_range": [float(stages.sum(axis=1).min()), float(stages.sum(axis=1).max())],
        "last_seconds": {"sequential": median["last@sequential"], "batch1": median["last@1"], "tuned": median[f"last@{tuned_batch_size}"]},
        "measured_exit_seconds": {c[5:]: v for c, v in median.items() if c.startswith("exit@")},
        "rounds": rounds,
        "instances_per_pass": len(timing_texts),
    }


def closed_loop(clients: int, requests: int, max_seconds: float, make_sender: Callable[[], Callable[[int], None]]) -> dict:
    """A bounded closed-loop load: `clients` threads, each sending request k (0, 1, 2 ... shared among them) and
    waiting for its answer before the next, until `requests` were sent or `max_seconds` passed.

    `make_sender()` runs once in each thread and returns its `send(k)` (so a thread can keep a connection);
    `send` raises on a failed request. Returns the requests done, requests/s and latency percentiles (ms).
    """
    import threading

    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_request = [0]
    barrier = threading.Barrier(clients + 1)
    give_up = [0.0]

    def client():
        mine = []
        try:
            send = make_sender()
            barrier.wait()
            while time.perf_counter() < give_up[0]:
                with lock:
                    k = next_request[0]
                    if k >= requests:
                        break
                    next_request[0] += 1
                sent = time.perf_counter()
                send(k)
                mine.append(time.perf_counter() - sent)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            with lock:
                latencies.extend(mine)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    give_up[0] = time.perf_counter() + max_seconds
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    started = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]!r}") from errors[0]
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    return {"requests": len(latencies), "per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99))}
