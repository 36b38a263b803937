"""The C++ core: the deferral queue's release rules, backpressure and close; the latency recorder; the clock."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from tango_edge._core import DeferralQueue, LatencyRecorder, now_ns

LONG_US = 60_000_000  # a deadline no test ever reaches
POP_US = 5_000_000  # a generous pop timeout for things that should happen at once


def wait_until(condition, timeout: float = 10.0) -> None:
    """Poll until condition() holds (threads may start late on a busy machine)."""
    give_up = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < give_up, "condition not reached"
        time.sleep(0.005)


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# ---- DeferralQueue: many producers and consumers -----------------------------------------------------


@pytest.mark.parametrize("consumers", [1, 2])
def test_queue_loses_and_duplicates_nothing(consumers):
    producers, per_producer, max_batch = 4, 600, 16
    q = DeferralQueue(64, max_batch, max_wait_us=1000)  # small capacity: producers also hit backpressure
    batches: list[list[int]] = []
    lock = threading.Lock()

    def produce(p):
        ids = [p * per_producer + i for i in range(per_producer)]
        rng = random.Random(p)
        i = 0
        while i < len(ids):  # a mix of push and push_many, some with their own deadline
            n = rng.choice([1, 1, 3, 7])
            chunk = ids[i : i + n]
            ok = q.push(chunk[0], rng.choice([-1, 0, 500])) if n == 1 else q.push_many(chunk)
            assert ok
            i += n

    def consume():
        while (batch := q.pop_batch()) != []:
            assert batch is not None  # no timeout given
            with lock:
                batches.append(batch)

    consumer_threads = [start(consume) for _ in range(consumers)]
    producer_threads = [start(produce, p) for p in range(producers)]
    for t in producer_threads:
        t.join(60)
        assert not t.is_alive()
    q.close()
    for t in consumer_threads:
        t.join(60)
        assert not t.is_alive()

    seen = [i for batch in batches for i in batch]
    assert sorted(seen) == list(range(producers * per_producer))  # every id once: none lost, none twice
    assert all(1 <= len(batch) <= max_batch for batch in batches)
    assert len(q) == 0 and q.pop_batch(timeout_us=0) == []
    assert q.wait_summary()["count"] == producers * per_producer
    if consumers == 1:  # a single consumer sees each producer's ids in push order (oldest first)
        for p in range(producers):
            mine = [i for i in seen if i // per_producer == p]
            assert mine == sorted(mine)


# ---- DeferralQueue: release rules --------------------------------------------------------------------


def test_full_batch_pops_at_once():
    q = DeferralQueue(16, 4)  # no deadline
    assert q.push_many([10, 11, 12, 13, 14, 15])
    assert q.pop_batch(timeout_us=0) == [10, 11, 12, 13]
    assert q.pop_batch(timeout_us=0) is None  # two left: neither a full batch nor due
    assert len(q) == 2
    assert q.push_many([16, 17])
    assert q.pop_batch(timeout_us=0) == [14, 15, 16, 17]


def test_lone_item_waits_for_its_deadline():
    q = DeferralQueue(8, 4, max_wait_us=5_000_000)
    assert q.push(1)
    assert q.pop_batch(timeout_us=0) is None
    assert q.pop_batch(timeout_us=50_000) is None  # 50 ms, far below the 5 s deadline
    assert len(q) == 1


def test_lone_item_released_after_its_deadline():
    q = DeferralQueue(8, 4, max_wait_us=20_000)
    assert q.push(7)
    assert q.pop_batch(timeout_us=POP_US) == [7]
    waited = q.wait_summary()
    assert waited["count"] == 1
    assert waited["min_ms"] >= 20.0  # released only once its 20 ms deadline had passed
    q.reset_wait_summary()
    assert q.wait_summary()["count"] == 0


def test_consumer_waiting_forever_wakes_for_a_deadline():
    q = DeferralQueue(8, 4)
    got = []
    t = start(lambda: got.append(q.pop_batch()))  # no timeout, empty queue: sleeps until notified
    wait_until(lambda: q.waiting_consumers == 1)
    assert q.push(3, wait_us=10_000)
    t.join(POP_US / 1e6)
    assert not t.is_alive() and got == [[3]]


def test_per_item_deadline_overrides_the_default():
    q = DeferralQueue(8, 4, max_wait_us=LONG_US)
    assert q.push(1, wait_us=10_000)
    assert q.pop_batch(timeout_us=POP_US) == [1]  # the item's 10 ms, not the queue's 60 s


def test_per_item_zero_wait_means_no_deadline():
    q = DeferralQueue(8, 4, max_wait_us=10_000)
    assert q.push(1, wait_us=0)
    assert q.push(2, wait_us=LONG_US)
    assert q.pop_batch(timeout_us=200_000) is None  # 200 ms: well past the queue's 10 ms default
    q.flush()
    assert q.pop_batch(timeout_us=0) == [1, 2]


def test_eager_releases_items_with_a_deadline_at_once_but_not_the_others():
    q = DeferralQueue(16, 8, max_wait_us=LONG_US)
    assert q.push_many([1, 2], wait_us=0)  # stream items: no deadline
    assert q.pop_batch(timeout_us=0) is None
    q.set_eager(True)
    assert q.pop_batch(timeout_us=0) is None  # eager does not apply to items without a deadline
    assert q.push(3)  # an online item (the queue's long default deadline)
    assert q.pop_batch(timeout_us=0) == [1, 2, 3]  # released at once, older items with it
    q.set_eager(False)
    assert q.push(4)
    assert q.pop_batch(timeout_us=0) is None  # not eager: it waits for its deadline
    q.set_eager(True)
    assert q.pop_batch(timeout_us=0) == [4]


def test_becoming_eager_wakes_a_waiting_consumer():
    q = DeferralQueue(16, 8, max_wait_us=LONG_US)
    assert q.push(1)
    got = []
    t = start(lambda: got.append(q.pop_batch()))
    wait_until(lambda: q.waiting_consumers == 1)
    q.set_eager(True)
    t.join(POP_US / 1e6)
    assert not t.is_alive() and got == [[1]]


def test_an_item_pushed_while_eager_wakes_a_waiting_consumer():
    q = DeferralQueue(16, 8, max_wait_us=LONG_US)
    q.set_eager(True)
    got = []
    t = start(lambda: got.append(q.pop_batch()))
    wait_until(lambda: q.waiting_consumers == 1)
    assert q.push(7)
    t.join(POP_US / 1e6)
    assert not t.is_alive() and got == [[7]]


def test_a_due_item_releases_older_ones_with_it():
    q = DeferralQueue(8, 4, max_wait_us=LONG_US)
    assert q.push(1)
    assert q.push(2, wait_us=10_000)
    assert q.pop_batch(timeout_us=POP_US) == [1, 2]  # oldest first


def test_flush_releases_a_partial_batch_once():
    q = DeferralQueue(16, 8)
    assert q.push_many([1, 2, 3])
    assert q.pop_batch(timeout_us=0) is None
    q.flush()
    assert q.pop_batch(timeout_us=0) == [1, 2, 3]
    assert q.push(4)
    assert q.pop_batch(timeout_us=50_000) is None  # the flush applied to what waited then, not to later items


def test_flush_wakes_a_waiting_consumer():
    q = DeferralQueue(16, 8)
    assert q.push_many([1, 2])
    got = []
    t = start(lambda: got.append(q.pop_batch()))
    wait_until(lambda: q.waiting_consumers == 1)
    q.flush()
    t.join(POP_US / 1e6)
    assert not t.is_alive() and got == [[1, 2]]


def test_close_refuses_pushes_and_drains():
    q = DeferralQueue(16, 2)
    assert q.push_many([1, 2, 3])
    assert q.pop_batch(timeout_us=0) == [1, 2]
    assert q.push(4)
    q.close()
    assert q.closed
    assert q.push(5) is False
    assert q.push_many([6, 7]) is False
    assert len(q) == 2
    assert q.pop_batch(timeout_us=0) == [3, 4]  # what is left drains without waiting for a full batch
    assert q.pop_batch(timeout_us=0) == []
    assert q.pop_batch() == []  # and keeps saying so


def test_close_wakes_blocked_consumer_and_producer():
    q = DeferralQueue(1, 4)
    got, pushed = [], []
    consumer = start(lambda: got.append(q.pop_batch()))
    wait_until(lambda: q.waiting_consumers == 1)
    q.close()
    consumer.join(POP_US / 1e6)
    assert not consumer.is_alive() and got == [[]]

    q = DeferralQueue(1, 4)
    assert q.push(1)
    producer = start(lambda: pushed.append(q.push(2)))  # full: blocks
    wait_until(lambda: q.waiting_producers == 1)
    assert pushed == []
    q.close()
    producer.join(POP_US / 1e6)
    assert not producer.is_alive() and pushed == [False]
    assert q.pop_batch(timeout_us=0) == [1]


def test_backpressure_blocks_producer_until_a_pop():
    q = DeferralQueue(2, 2)
    done = []

    def produce():
        for i in range(3):
            assert q.push(i)
        done.append(True)

    producer = start(produce)
    wait_until(lambda: q.waiting_producers == 1)  # the third push waits for room
    assert not done
    assert len(q) == 2
    assert q.pop_batch(timeout_us=POP_US) == [0, 1]
    producer.join(POP_US / 1e6)
    assert not producer.is_alive() and done
    assert len(q) == 1
    q.flush()
    assert q.pop_batch(timeout_us=0) == [2]


def test_full_queue_smaller_than_a_batch_is_released():
    """capacity < max_batch: a full queue can never grow into a batch, so it must not wait for one (deadlock)."""
    q = DeferralQueue(2, 8)
    assert q.push_many([1, 2])
    assert q.pop_batch(timeout_us=POP_US) == [1, 2]
    got = []
    producer = start(lambda: got.append(q.push_many([3, 4, 5, 6, 7, 8])))  # blocks while the queue is full
    batches = []
    while sum(map(len, batches)) < 6:
        batch = q.pop_batch(timeout_us=POP_US)
        assert batch is not None
        batches.append(batch)
    producer.join(POP_US / 1e6)
    assert got == [True] and batches == [[3, 4], [5, 6], [7, 8]]


def test_queue_properties():
    q = DeferralQueue(10, 3, 250)
    assert (q.capacity, q.max_batch, q.max_wait_us, q.closed, len(q)) == (10, 3, 250, False, 0)
    assert DeferralQueue(4, 2).max_wait_us == 0
    assert q.wait_summary()["count"] == 0


@pytest.mark.parametrize(
    "args, message",
    [((0, 4), "capacity"), ((4, 0), "max_batch"), ((4, 2, -1), "max_wait_us")],
)
def test_queue_constructor_rejects_bad_settings(args, message):
    with pytest.raises(ValueError, match=message):
        DeferralQueue(*args)


# ---- LatencyRecorder ---------------------------------------------------------------------------------


def test_recorder_exact_statistics_below_capacity():
    rng = np.random.default_rng(0)
    data = rng.integers(1_000, 50_000_000, size=1234)
    rec = LatencyRecorder(capacity=5000)
    for value in data.tolist():
        rec.record(value)
    s = rec.summary()
    assert s["count"] == len(data)
    assert s["mean_ms"] == pytest.approx(data.mean() / 1e6, rel=1e-12)
    assert s["min_ms"] == data.min() / 1e6
    assert s["max_ms"] == data.max() / 1e6
    for key, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
        assert s[key] == pytest.approx(np.percentile(data, q) / 1e6, rel=1e-12), key
    assert sorted(rec.samples()) == sorted(data.tolist())


def test_recorder_small_known_data():
    rec = LatencyRecorder()
    for value in (4_000_000, 1_000_000, 3_000_000, 2_000_000):
        rec.record(value)
    s = rec.summary()
    assert (s["count"], s["mean_ms"], s["min_ms"], s["max_ms"]) == (4, 2.5, 1.0, 4.0)
    assert s["p50_ms"] == pytest.approx(2.5)
    assert s["p95_ms"] == pytest.approx(3.85)
    assert s["p99_ms"] == pytest.approx(3.97)


def test_recorder_empty_summary_is_zero():
    s = LatencyRecorder().summary()
    assert s == {"count": 0, "mean_ms": 0.0, "min_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}


def test_recorder_reservoir_keeps_capacity_samples():
    rec = LatencyRecorder(capacity=100)
    n = 20_000
    for value in range(1, n + 1):
        rec.record(value)
    kept = rec.samples()
    assert len(kept) == 100
    assert len(set(kept)) == 100 and all(1 <= v <= n for v in kept)
    assert max(kept) > n // 2  # a uniform subset, not just the first 100
    s = rec.summary()
    assert s["count"] == n
    assert s["mean_ms"] == pytest.approx((n + 1) / 2 / 1e6)  # count/mean/min/max stay exact
    assert (s["min_ms"], s["max_ms"]) == (1 / 1e6, n / 1e6)
    assert s["min_ms"] <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_recorder_reset():
    rec = LatencyRecorder(capacity=10)
    for value in range(100, 200):
        rec.record(value)
    rec.reset()
    assert rec.summary()["count"] == 0 and rec.samples() == []
    rec.record(5_000_000)
    rec.record(7_000_000)
    s = rec.summary()
    assert (s["count"], s["min_ms"], s["max_ms"], s["mean_ms"]) == (2, 5.0, 7.0, 6.0)


def test_recorder_counts_records_from_many_threads():
    rec = LatencyRecorder(capacity=1000)
    threads, per_thread = 8, 5000

    def work(t):
        for i in range(per_thread):
            rec.record(t * per_thread + i)

    workers = [start(work, t) for t in range(threads)]
    for w in workers:
        w.join(60)
    total = threads * per_thread
    s = rec.summary()
    assert s["count"] == total
    assert s["mean_ms"] == pytest.approx((total - 1) / 2 / 1e6)
    assert (s["min_ms"], s["max_ms"]) == (0.0, (total - 1) / 1e6)
    assert len(rec.samples()) == 1000


# ---- clock -------------------------------------------------------------------------------------------


def test_now_ns_is_monotonic():
    readings = [now_ns() for _ in range(10_000)]
    assert all(b >= a for a, b in zip(readings, readings[1:]))
    before = time.monotonic_ns()
    reading = now_ns()
    after = time.monotonic_ns()
    assert before <= reading <= after  # the same steady clock as time.monotonic_ns
    time.sleep(0.002)
    assert now_ns() > reading
