#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "bindings.hpp"
#include "wordpiece.hpp"

namespace py = pybind11;

namespace tango {
namespace {

py::array_t<int64_t> to_array(const std::vector<int64_t>& values) {
    return py::array_t<int64_t>(static_cast<py::ssize_t>(values.size()), values.data());
}

// (ids, offsets, refused): the ids of text i are ids[offsets[i]:offsets[i + 1]]; `refused` lists the texts
// (empty ranges) that need the full tokenizer. The GIL is released while tokenizing.
py::tuple encode_batch(const WordPiece& wordpiece, const py::list& texts) {
    const size_t n = texts.size();
    std::vector<std::string_view> views(n);
    std::vector<bool> ascii(n, false);
    for (size_t i = 0; i < n; ++i) {
        PyObject* text = texts[i].ptr();
        if (PyUnicode_Check(text) && PyUnicode_IS_ASCII(text)) {  // for ASCII strings the UTF-8 form is the data
            Py_ssize_t size = 0;
            const char* data = PyUnicode_AsUTF8AndSize(text, &size);
            if (data != nullptr) {
                views[i] = std::string_view(data, static_cast<size_t>(size));
                ascii[i] = true;
            }
        }
    }
    std::vector<int64_t> ids, offsets(n + 1, 0), refused;
    {
        py::gil_scoped_release release;  // `texts` keeps the strings alive
        ids.reserve(n * 32);
        for (size_t i = 0; i < n; ++i) {
            offsets[i] = static_cast<int64_t>(ids.size());
            if (!ascii[i] || !wordpiece.encode(views[i], ids)) {
                refused.push_back(static_cast<int64_t>(i));
            }
        }
        offsets[n] = static_cast<int64_t>(ids.size());
    }
    return py::make_tuple(to_array(ids), to_array(offsets), to_array(refused));
}

}  // namespace

void register_wordpiece(py::module_& m) {
    py::class_<WordPiece>(m, "WordPiece",
                          "BERT's uncased WordPiece for printable-ASCII text (tokenizer.json's BertNormalizer, "
                          "BertPreTokenizer, WordPiece, [CLS] ... [SEP]); other texts are refused for the full tokenizer.")
        .def(py::init([](const std::vector<std::string>& vocab, int64_t unk_id, int64_t cls_id, int64_t sep_id,
                         std::string continuing_prefix, size_t max_chars_per_word, std::vector<std::string> added_tokens) {
                 return new WordPiece(vocab, WordPieceOptions{std::move(continuing_prefix), max_chars_per_word, unk_id,
                                                              cls_id, sep_id, std::move(added_tokens)});
             }),
             py::arg("vocab"), py::arg("unk_id"), py::arg("cls_id"), py::arg("sep_id"), py::arg("continuing_prefix") = "##",
             py::arg("max_chars_per_word") = 100, py::arg("added_tokens") = std::vector<std::string>{})
        .def("encode_batch", &encode_batch, py::arg("texts"))
        .def_property_readonly("vocab_size", &WordPiece::vocab_size);
}

}  // namespace tango
