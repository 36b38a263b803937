// BERT's uncased WordPiece tokenizer for plain ASCII text, the common case for English input.
//
// It reproduces the Hugging Face tokenizer.json pipeline BertNormalizer(lowercase) -> BertPreTokenizer ->
// WordPiece -> [CLS] ... [SEP] exactly, for texts made of printable ASCII, tab, newline and carriage return.
// Anything else (other control characters, non-ASCII, an added token such as "[MASK]" written in the text)
// is refused, and the caller tokenizes that text with the full tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tango {

struct WordPieceOptions {
    std::string continuing_prefix = "##";
    size_t max_chars_per_word = 100;
    int64_t unk_id = 0;
    int64_t cls_id = 0;
    int64_t sep_id = 0;
    std::vector<std::string> added_tokens;  // a text holding one (in any case) is refused, for the full tokenizer
};

class WordPiece {
public:
    // vocab[i] is the token of id i.
    WordPiece(const std::vector<std::string>& vocab, WordPieceOptions options);

    // Appends the ids of [CLS] text [SEP] to `out` and returns true, or returns false and leaves `out` as it
    // was when the text needs the full tokenizer.
    bool encode(std::string_view text, std::vector<int64_t>& out) const;

    size_t vocab_size() const { return vocab_.size(); }

private:
    void encode_word(std::string_view word, std::vector<int64_t>& out, std::string& key) const;

    std::unordered_map<std::string, int64_t> vocab_;
    WordPieceOptions options_;
};

}  // namespace tango
