#include "wordpiece.hpp"

#include <utility>

namespace tango {
namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// BERT splits every ASCII punctuation character into a word of its own (not only Unicode's P* class: "$",
// "+", "<", "^", "`" and "|" too).
bool is_punctuation(unsigned char c) {
    return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

}  // namespace

WordPiece::WordPiece(const std::vector<std::string>& vocab, WordPieceOptions options) : options_(std::move(options)) {
    // Added tokens are searched for case-insensitively: a tokenizer may match them after lowercasing
    // (MPNet's "<unk>" is normalized), and refusing a text the full tokenizer would not split only costs time.
    for (std::string& token : options_.added_tokens) {
        for (char& c : token) c = lower(c);
    }
    vocab_.reserve(vocab.size());
    for (size_t i = 0; i < vocab.size(); ++i) {
        vocab_.emplace(vocab[i], static_cast<int64_t>(i));
    }
}

bool WordPiece::encode(std::string_view text, std::vector<int64_t>& out) const {
    for (unsigned char c : text) {
        if (!(is_space(c) || (c >= 32 && c <= 126))) {
            return false;  // non-ASCII or a control character the normalizer would drop
        }
    }
    if (!options_.added_tokens.empty()) {
        std::string lowered(text);
        for (char& c : lowered) c = lower(c);
        for (const std::string& token : options_.added_tokens) {
            if (lowered.find(token) != std::string::npos) {
                return false;
            }
        }
    }
    out.push_back(options_.cls_id);
    std::string word, key;
    auto flush = [&] {
        if (!word.empty()) {
            encode_word(word, out, key);
            word.clear();
        }
    };
    for (char c : text) {
        const auto u = static_cast<unsigned char>(c);
        if (is_space(u)) {
            flush();
        } else if (is_punctuation(u)) {
            flush();
            word.push_back(c);
            flush();
        } else {
            word.push_back(lower(c));
        }
    }
    flush();
    out.push_back(options_.sep_id);
    return true;
}

// Greedy longest-match-first; a word with a piece outside the vocabulary becomes a single [UNK].
void WordPiece::encode_word(std::string_view word, std::vector<int64_t>& out, std::string& key) const {
    if (word.size() > options_.max_chars_per_word) {
        out.push_back(options_.unk_id);
        return;
    }
    const size_t mark = out.size();
    size_t start = 0;
    while (start < word.size()) {
        size_t end = word.size();
        int64_t found = -1;
        while (start < end) {
            if (start > 0) {
                key = options_.continuing_prefix;
            } else {
                key.clear();
            }
            key.append(word.substr(start, end - start));
            auto it = vocab_.find(key);
            if (it != vocab_.end()) {
                found = it->second;
                break;
            }
            --end;
        }
        if (found < 0) {
            out.resize(mark);
            out.push_back(options_.unk_id);
            return;
        }
        out.push_back(found);
        start = end;
    }
}

}  // namespace tango
