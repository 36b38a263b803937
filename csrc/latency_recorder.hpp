// Thread-safe latency statistics: exact count/mean/min/max, percentiles from a bounded reservoir.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

namespace tango {

struct LatencySummary {
    uint64_t count = 0;   // samples recorded since the last reset
    double mean_ns = 0;   // exact mean
    int64_t min_ns = 0;   // 0 when empty
    int64_t max_ns = 0;   // 0 when empty
    double p50_ns = 0;    // percentiles from the reservoir (exact below its capacity)
    double p95_ns = 0;
    double p99_ns = 0;
};

class LatencyRecorder {
public:
    // capacity: samples kept for percentiles; past it, reservoir sampling keeps a uniform subset.
    explicit LatencyRecorder(size_t capacity = 100000);

    void record(int64_t nanoseconds);
    void record_many(const std::vector<int64_t>& nanoseconds);  // one lock for a whole batch
    LatencySummary summary() const;
    std::vector<int64_t> samples() const;  // the raw reservoir, unsorted
    void reset();

private:
    void record_locked(int64_t nanoseconds);

    size_t capacity_;
    mutable std::mutex mutex_;
    std::vector<int64_t> reservoir_;
    uint64_t count_ = 0;
    long double sum_ = 0;
    int64_t min_ = 0;
    int64_t max_ = 0;
    uint64_t rng_state_ = 0x9E3779B97F4A7C15ull;
};

}  // namespace tango
