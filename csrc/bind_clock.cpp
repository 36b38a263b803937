#include "bindings.hpp"
#include "clock.hpp"

namespace tango {
void register_clock(pybind11::module_& m) {
    m.def("now_ns", &now_ns, "Monotonic clock in nanoseconds (steady_clock).");
}
}  // namespace tango
