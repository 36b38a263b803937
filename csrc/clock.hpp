// Monotonic high-resolution clock shared by every timing in the core.
#pragma once
#include <chrono>
#include <cstdint>

namespace tango {

// Nanoseconds on the steady clock: never jumps with wall-clock changes.
inline int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace tango
