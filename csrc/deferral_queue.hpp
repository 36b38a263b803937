// Bounded thread-safe queue of deferred instance ids that releases them in batches.
#pragma once
#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "latency_recorder.hpp"

namespace tango {

struct DeferralQueueOptions {
    size_t capacity = 4096;    // items waiting at most; push blocks beyond it (backpressure)
    size_t max_batch = 32;     // a batch is ready as soon as this many items wait
    int64_t max_wait_us = 0;   // a batch is ready when an item has waited this long; 0 = no deadline
};

class DeferralQueue {
public:
    explicit DeferralQueue(DeferralQueueOptions options);

    // Blocks while the queue is full. wait_us overrides max_wait_us for these items
    // (-1 = the queue's default, 0 = no deadline). Returns false, pushing nothing, once closed.
    bool push(int64_t id, int64_t wait_us = -1);
    bool push_many(const std::vector<int64_t>& ids, int64_t wait_us = -1);

    // Blocks until a batch is ready: max_batch items wait, an item's deadline passed, flush() or close()
    // was called. Returns up to max_batch ids, oldest first; an empty vector once closed and drained;
    // nullopt when timeout_us (-1 = none) passes first.
    std::optional<std::vector<int64_t>> pop_batch(int64_t timeout_us = -1);

    void flush();  // everything waiting now is released without waiting for a full batch
    // While eager, items that have a deadline are released at once, in batches of what is waiting, instead of
    // at their deadline: a consumer with an idle model takes what has come (continuous batching); items
    // without a deadline still wait for a full batch or a flush.
    void set_eager(bool eager);
    void close();  // refuse further pushes; consumers drain what is left

    size_t size() const;
    bool closed() const;
    size_t waiting_consumers() const;  // threads blocked in pop_batch now (lets tests synchronise on it)
    size_t waiting_producers() const;  // threads blocked in push by a full queue now
    const DeferralQueueOptions& options() const { return options_; }
    LatencyRecorder& wait_recorder() { return wait_recorder_; }  // time each item spent queued

private:
    struct Item {
        int64_t id;
        int64_t enqueued_ns;
        int64_t deadline_ns;  // INT64_MAX = none
        uint64_t seq;
    };
    // A batch is full at max_batch items, or when the queue is full: with capacity < max_batch it can grow no
    // further, and waiting for more would deadlock blocked producers against the consumer.
    size_t full_batch() const { return std::min(options_.max_batch, options_.capacity); }
    bool batch_ready_locked(int64_t now) const;
    std::vector<int64_t> take_batch_locked(int64_t now);

    DeferralQueueOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable not_empty_;
    std::condition_variable not_full_;
    std::deque<Item> items_;
    std::multiset<int64_t> deadlines_;
    uint64_t next_seq_ = 0;
    uint64_t flush_mark_ = 0;  // items with seq below it are released
    bool closed_ = false;
    bool eager_ = false;
    size_t waiting_consumers_ = 0;
    size_t waiting_producers_ = 0;
    LatencyRecorder wait_recorder_;
};

}  // namespace tango
