#include "latency_recorder.hpp"

#include <algorithm>
#include <cmath>

namespace tango {

LatencyRecorder::LatencyRecorder(size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {
    reservoir_.reserve(std::min<size_t>(capacity_, 4096));
}

void LatencyRecorder::record(int64_t nanoseconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    record_locked(nanoseconds);
}

void LatencyRecorder::record_many(const std::vector<int64_t>& nanoseconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (int64_t value : nanoseconds) record_locked(value);
}

void LatencyRecorder::record_locked(int64_t nanoseconds) {
    if (count_ == 0 || nanoseconds < min_) min_ = nanoseconds;
    if (count_ == 0 || nanoseconds > max_) max_ = nanoseconds;
    ++count_;
    sum_ += nanoseconds;
    if (reservoir_.size() < capacity_) {
        reservoir_.push_back(nanoseconds);
        return;
    }
    // Algorithm R with xorshift64: every sample so far is kept with equal probability.
    rng_state_ ^= rng_state_ << 13;
    rng_state_ ^= rng_state_ >> 7;
    rng_state_ ^= rng_state_ << 17;
    const uint64_t slot = rng_state_ % count_;
    if (slot < capacity_) reservoir_[slot] = nanoseconds;
}

static double percentile(const std::vector<int64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    // Linear interpolation between closest ranks (numpy's default).
    const double pos = q * static_cast<double>(sorted.size() - 1);
    const size_t lo = static_cast<size_t>(std::floor(pos));
    const size_t hi = std::min(lo + 1, sorted.size() - 1);
    const double frac = pos - static_cast<double>(lo);
    return static_cast<double>(sorted[lo]) * (1 - frac) + static_cast<double>(sorted[hi]) * frac;
}

LatencySummary LatencyRecorder::summary() const {
    std::vector<int64_t> sorted;
    LatencySummary out;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        if (count_ == 0) return out;
        sorted = reservoir_;
        out.count = count_;
        out.mean_ns = static_cast<double>(sum_ / count_);
        out.min_ns = min_;
        out.max_ns = max_;
    }
    std::sort(sorted.begin(), sorted.end());
    out.p50_ns = percentile(sorted, 0.50);
    out.p95_ns = percentile(sorted, 0.95);
    out.p99_ns = percentile(sorted, 0.99);
    return out;
}

std::vector<int64_t> LatencyRecorder::samples() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return reservoir_;
}

void LatencyRecorder::reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    reservoir_.clear();
    count_ = 0;
    sum_ = 0;
    min_ = max_ = 0;
}

}  // namespace tango
