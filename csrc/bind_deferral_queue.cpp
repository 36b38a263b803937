#include <pybind11/stl.h>

#include "bindings.hpp"
#include "deferral_queue.hpp"

namespace py = pybind11;

namespace tango {

void register_deferral_queue(py::module_& m) {
    py::class_<DeferralQueue>(m, "DeferralQueue",
                              "Bounded queue of deferred instance ids released in batches by size, deadline, "
                              "flush or close. Blocking calls release the GIL.")
        .def(py::init([](size_t capacity, size_t max_batch, int64_t max_wait_us) {
                 return new DeferralQueue(DeferralQueueOptions{capacity, max_batch, max_wait_us});
             }),
             py::arg("capacity"), py::arg("max_batch"), py::arg("max_wait_us") = 0)
        .def("push", &DeferralQueue::push, py::arg("id"), py::arg("wait_us") = -1,
             py::call_guard<py::gil_scoped_release>())
        .def("push_many", &DeferralQueue::push_many, py::arg("ids"), py::arg("wait_us") = -1,
             py::call_guard<py::gil_scoped_release>())
        .def("pop_batch", &DeferralQueue::pop_batch, py::arg("timeout_us") = -1,
             py::call_guard<py::gil_scoped_release>(),
             "Up to max_batch ids; [] once closed and drained; None on timeout.")
        .def("flush", &DeferralQueue::flush, py::call_guard<py::gil_scoped_release>())
        .def("close", &DeferralQueue::close, py::call_guard<py::gil_scoped_release>())
        .def("set_eager", &DeferralQueue::set_eager, py::arg("eager"), py::call_guard<py::gil_scoped_release>(),
             "While eager, items with a deadline are released at once (the consumer has an idle model).")
        .def("__len__", &DeferralQueue::size)
        .def_property_readonly("closed", &DeferralQueue::closed)
        .def_property_readonly("waiting_consumers", &DeferralQueue::waiting_consumers,
                               "Threads blocked in pop_batch now.")
        .def_property_readonly("waiting_producers", &DeferralQueue::waiting_producers,
                               "Threads blocked in push by a full queue now.")
        .def_property_readonly("capacity", [](const DeferralQueue& q) { return q.options().capacity; })
        .def_property_readonly("max_batch", [](const DeferralQueue& q) { return q.options().max_batch; })
        .def_property_readonly("max_wait_us", [](const DeferralQueue& q) { return q.options().max_wait_us; })
        .def("wait_summary", [](DeferralQueue& q) { return summary_to_dict(q.wait_recorder().summary()); },
             "How long items waited in the queue (ms).")
        .def("reset_wait_summary", [](DeferralQueue& q) { q.wait_recorder().reset(); },
             "Forget the waits recorded so far (for a caller's statistics reset).");
}

}  // namespace tango
