// One register_<thing>(m) per bound concern; module.cpp only wires them.
#pragma once
#include <pybind11/pybind11.h>

#include "latency_recorder.hpp"

namespace tango {
pybind11::dict summary_to_dict(const LatencySummary& s);
void register_clock(pybind11::module_& m);
void register_latency_recorder(pybind11::module_& m);
void register_deferral_queue(pybind11::module_& m);
void register_wordpiece(pybind11::module_& m);
}  // namespace tango
