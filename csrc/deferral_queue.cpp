#include "deferral_queue.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "clock.hpp"

namespace tango {

namespace {
constexpr int64_t kNoDeadline = std::numeric_limits<int64_t>::max();
}

DeferralQueue::DeferralQueue(DeferralQueueOptions options) : options_(options) {
    if (options_.capacity == 0) throw std::invalid_argument("DeferralQueue: capacity must be >= 1");
    if (options_.max_batch == 0) throw std::invalid_argument("DeferralQueue: max_batch must be >= 1");
    if (options_.max_wait_us < 0) throw std::invalid_argument("DeferralQueue: max_wait_us must be >= 0");
}

bool DeferralQueue::push(int64_t id, int64_t wait_us) {
    return push_many(std::vector<int64_t>{id}, wait_us);
}

bool DeferralQueue::push_many(const std::vector<int64_t>& ids, int64_t wait_us) {
    if (wait_us < 0) wait_us = options_.max_wait_us;
    std::unique_lock<std::mutex> lock(mutex_);
    for (int64_t id : ids) {
        if (!closed_ && items_.size() >= options_.capacity) {
            ++waiting_producers_;
            not_full_.wait(lock, [&] { return closed_ || items_.size() < options_.capacity; });
            --waiting_producers_;
        }
        if (closed_) return false;
        const int64_t now = now_ns();
        const int64_t deadline = wait_us == 0 ? kNoDeadline : now + wait_us * 1000;
        items_.push_back(Item{id, now, deadline, next_seq_++});
        deadlines_.insert(deadline);
        // Wake the consumer only when its answer may have changed: a full batch, or a new earliest deadline.
        if (items_.size() >= full_batch() || deadline <= *deadlines_.begin() || (eager_ && deadline != kNoDeadline)) {
            not_empty_.notify_one();
        }
    }
    return true;
}

bool DeferralQueue::batch_ready_locked(int64_t now) const {
    if (items_.empty()) return false;
    return closed_ || items_.size() >= full_batch() || items_.front().seq < flush_mark_ ||
           *deadlines_.begin() <= now || (eager_ && *deadlines_.begin() != kNoDeadline);
}

std::vector<int64_t> DeferralQueue::take_batch_locked(int64_t now) {
    const size_t n = std::min(options_.max_batch, items_.size());
    std::vector<int64_t> batch;
    batch.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const Item& item = items_.front();
        batch.push_back(item.id);
        wait_recorder_.record(now - item.enqueued_ns);
        deadlines_.erase(deadlines_.find(item.deadline_ns));
        items_.pop_front();
    }
    not_full_.notify_all();
    if (!items_.empty()) not_empty_.notify_one();  // another consumer may take the rest
    return batch;
}

std::optional<std::vector<int64_t>> DeferralQueue::pop_batch(int64_t timeout_us) {
    const int64_t give_up = timeout_us < 0 ? kNoDeadline : now_ns() + timeout_us * 1000;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
        const int64_t now = now_ns();
        if (batch_ready_locked(now)) return take_batch_locked(now);
        if (closed_) return std::vector<int64_t>{};  // closed and drained
        if (now >= give_up) return std::nullopt;
        const int64_t wake = std::min(give_up, deadlines_.empty() ? kNoDeadline : *deadlines_.begin());
        ++waiting_consumers_;
        if (wake == kNoDeadline) {
            not_empty_.wait(lock);
        } else {
            not_empty_.wait_for(lock, std::chrono::nanoseconds(wake - now));
        }
        --waiting_consumers_;
    }
}

void DeferralQueue::flush() {
    std::lock_guard<std::mutex> lock(mutex_);
    flush_mark_ = next_seq_;
    not_empty_.notify_all();
}

void DeferralQueue::set_eager(bool eager) {
    std::lock_guard<std::mutex> lock(mutex_);
    eager_ = eager;
    if (eager) not_empty_.notify_all();
}

void DeferralQueue::close() {
    std::lock_guard<std::mutex> lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
}

size_t DeferralQueue::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return items_.size();
}

size_t DeferralQueue::waiting_consumers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return waiting_consumers_;
}

size_t DeferralQueue::waiting_producers() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return waiting_producers_;
}

bool DeferralQueue::closed() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return closed_;
}

}  // namespace tango
