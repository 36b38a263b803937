"""The OpenVINO tokenizer (openvino_tokenizer.xml, written at export) and the C++ core's WordPiece against
tokenizer.json."""

from __future__ import annotations

import json
import shutil

import pytest

import tiny_models
from tango_edge import Cascade, TangoEdgeError
from tango_edge.tier import Tier
from tango_edge.tokenization import OV_TOKENIZER_FILE, TOKENIZER_FILE, native_wordpiece, read_spec

MAX_LENGTH = 128


def encoders(folder):
    fast = Tier(folder, max_length=MAX_LENGTH, tokenizer="openvino").encoder
    rust = Tier(folder, max_length=MAX_LENGTH, tokenizer="rust").encoder
    return fast, rust


def test_export_writes_an_openvino_tokenizer(tiny_irs):
    fast, rust = encoders(tiny_irs["a"])
    assert fast.ov_tokenizer is not None
    assert rust.ov_tokenizer is None


def test_same_ids_and_truncation_as_tokenizer_json(tiny_irs, mixed_sentences):
    fast, rust = encoders(tiny_irs["a"])
    texts = mixed_sentences + ["Ünïcödé CAFÉ — “quotes” 😀 日本語", "x", "  spaced   out  "]
    got, want = fast.encode(texts), rust.encode(texts)
    assert 0 < sum(e.truncated for e in want) < len(want)  # both sides of max_length are exercised
    for text, a, b in zip(texts, got, want):
        assert (list(a.ids), a.truncated) == (b.ids, b.truncated), text
        assert len(a.ids) <= MAX_LENGTH


def test_openvino_tokenizer_is_freed_without_the_garbage_collector_and_closes(tiny_irs):
    """No reference cycle through its request queue's callback: dropping the last reference frees it at once
    (a queue left to interpreter finalization can abort the process); close() ends it for good."""
    import gc
    import weakref

    gc.disable()
    try:
        tokenizer = encoders(tiny_irs["a"])[0].ov_tokenizer
        assert len(tokenizer.ids(["a gorgeous film"])) == 1
        alive = weakref.ref(tokenizer)
        del tokenizer
        assert alive() is None
    finally:
        gc.enable()
    tokenizer = encoders(tiny_irs["a"])[0].ov_tokenizer
    tokenizer.close()
    tokenizer.close()
    with pytest.raises(TangoEdgeError, match="closed"):
        tokenizer.ids(["dull"])


def test_pairs_use_tokenizer_json(tiny_irs):
    fast, rust = encoders(tiny_irs["a"])
    pairs = [("a gorgeous film", "dull and boring"), ("great fun", "charming")]
    for a, b in zip(fast.encode(pairs), rust.encode(pairs)):
        assert (a.ids, a.type_ids) == (b.ids, b.type_ids)
        assert 1 in a.type_ids


def test_both_tokenizers_give_the_same_answers(tiny_cascade, mixed_sentences):
    with Cascade.from_dir(tiny_cascade) as fast, Cascade.from_dir(tiny_cascade, tokenizer="rust") as rust:
        for a, b in zip(fast.predict(mixed_sentences), rust.predict(mixed_sentences)):
            assert (a.label, a.tier, a.truncated) == (b.label, b.tier, b.truncated)
            assert a.score == pytest.approx(b.score, abs=1e-5)


def test_folder_without_openvino_tokenizer_falls_back(tiny_irs, tmp_path, mixed_sentences):
    folder = shutil.copytree(tiny_irs["a"], tmp_path / "tier")
    (folder / OV_TOKENIZER_FILE).unlink()
    fast, rust = encoders(folder)
    assert fast.ov_tokenizer is None
    assert [e.ids for e in fast.encode(mixed_sentences[:20])] == [e.ids for e in rust.encode(mixed_sentences[:20])]


def test_corrupt_openvino_tokenizer_is_a_clear_error(tiny_irs, tmp_path):
    folder = shutil.copytree(tiny_irs["a"], tmp_path / "tier")
    (folder / OV_TOKENIZER_FILE).write_text("<not a model")
    with pytest.raises(TangoEdgeError, match="cannot load tokenizer"):
        Tier(folder, max_length=MAX_LENGTH)


TRICKY = ["", "   ", "Hello, World!!", "a\tb\nc\rd", "don't $5+3<4^2`|~ {ok} [x] _y_", "UPPER lower MiXeD", "a" * 100, "b" * 101,
          "a phrase,with;punctuation...and--dashes", "x\x0by", "caf\u00e9 cr\u00e8me", "[MASK] it", "a [CLS] b", "naive \U0001F600", "nul\x00byte", "del\x7f"]


@pytest.mark.parametrize("folder", ["tiny", "shipped"])
def test_native_wordpiece_same_ids_as_tokenizer_json(tiny_irs, mixed_sentences, folder):
    """Tiny vocabulary (many [UNK]s and ## pieces) and the shipped 30k one; ASCII texts must take the fast path."""
    path = tiny_irs["a"] if folder == "tiny" else tiny_models.REPO / "models" / "sst2" / "tier1"
    native = Tier(path, max_length=MAX_LENGTH).encoder
    rust = Tier(path, max_length=MAX_LENGTH, tokenizer="rust").encoder
    assert native.backend == "native+openvino" and native.native is not None
    texts = mixed_sentences + TRICKY
    got, want = native.encode(texts), rust.encode(texts)
    for text, a, b in zip(texts, got, want):
        assert (list(a.ids), a.truncated) == (list(b.ids), b.truncated), repr(text)

    _, _, refused = native.native.encode_batch(texts)
    refused = {texts[i] for i in refused.tolist()}
    assert refused == {t for t in TRICKY if not t.isascii() or "[MASK]" in t or "[CLS]" in t or any(c in t for c in "\x0b\x00\x7f")}


def test_native_wordpiece_only_for_uncased_wordpiece(tiny_irs):
    spec = json.loads((tiny_irs["a"] / TOKENIZER_FILE).read_text())
    native = lambda s: native_wordpiece(s, read_spec(s))
    assert native(spec) is not None
    cased = {**spec, "normalizer": {**spec["normalizer"], "lowercase": False}}
    assert native(cased) is None
    assert native({**spec, "pre_tokenizer": {"type": "Whitespace"}}) is None
    assert native({**spec, "post_processor": None}) is None


def test_mpnet_layout_takes_the_native_path_with_tokenizer_json_ids(tiny_mpnet_irs, mixed_sentences):
    """MPNet's tokenizer (<s> A </s>, pad id 1, added tokens matched after lowercasing, a fixed padding to 128 in
    tokenizer.json): the C++ WordPiece gives tokenizer.json's ids, unpadded, and refuses added tokens in any case."""
    folder = tiny_mpnet_irs["m1"]
    native = Tier(folder, max_length=MAX_LENGTH).encoder
    rust = Tier(folder, max_length=MAX_LENGTH, tokenizer="rust").encoder
    assert native.backend.startswith("native") and native.pad_id == 1 and native.spec.single_bounds == (0, 2)
    texts = mixed_sentences + ["a <unk> film", "a <UNK> film", "<S> great </s>", "[unk] dull", "Ünïcödé film", "x"]
    got, want = native.encode(texts), rust.encode(texts)
    for text, a, b in zip(texts, got, want):
        assert (list(a.ids), a.truncated) == (list(b.ids), b.truncated), text
    assert all(len(e) < 128 for e in got[-6:])  # the tokenizer's own padding to 128 never applies
    _, _, refused = native.native.encode_batch(texts[-6:])
    assert refused.tolist() == [0, 1, 2, 3, 4]  # added tokens ("[UNK]" too), whatever their case, and non-ASCII: the full tokenizer
