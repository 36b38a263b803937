#include <pybind11/stl.h>

#include "bindings.hpp"
#include "latency_recorder.hpp"

namespace py = pybind11;

namespace tango {

py::dict summary_to_dict(const LatencySummary& s) {
    py::dict d;
    d["count"] = s.count;
    d["mean_ms"] = s.mean_ns / 1e6;
    d["min_ms"] = s.min_ns / 1e6;
    d["p50_ms"] = s.p50_ns / 1e6;
    d["p95_ms"] = s.p95_ns / 1e6;
    d["p99_ms"] = s.p99_ns / 1e6;
    d["max_ms"] = s.max_ns / 1e6;
    return d;
}

void register_latency_recorder(py::module_& m) {
    py::class_<LatencyRecorder>(m, "LatencyRecorder", "Thread-safe latency statistics fed with nanosecond durations.")
        .def(py::init<size_t>(), py::arg("capacity") = 100000)
        // No GIL release: the lock is held for well under a microsecond, and releasing the GIL from a busy
        // callback thread invites a GIL hand-off that can cost a whole switch interval.
        .def("record", &LatencyRecorder::record, py::arg("nanoseconds"))
        .def("record_many", &LatencyRecorder::record_many, py::arg("nanoseconds"))
        .def("summary", [](const LatencyRecorder& r) { return summary_to_dict(r.summary()); },
             "count, mean/min/p50/p95/p99/max in milliseconds.")
        .def("samples", &LatencyRecorder::samples, "Raw kept samples in nanoseconds (a uniform reservoir).")
        .def("reset", &LatencyRecorder::reset);
}

}  // namespace tango
