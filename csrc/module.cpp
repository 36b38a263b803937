#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "tango-edge C++ core: a monotonic clock, latency statistics, the deferral queue and an ASCII WordPiece tokenizer (GIL-free).";
    tango::register_clock(m);
    tango::register_latency_recorder(m);
    tango::register_deferral_queue(m);
    tango::register_wordpiece(m);
}
