#!/usr/bin/env python
"""Make unlabelled transfer sentences for distillation by the rules of Tang et al. (2019).

For every word of a training sentence: with p_mask replace it by a mask token (--mask-token, BERT's [MASK] by default); else with p_similar by a word of the
same kind; else with p_random by a random vocabulary word. Then, with p_ngram, keep only an n-gram (n in 1..5)
of the result. "Same kind" stands in for Tang et al.'s same part of speech: no tagger model can be fetched
here, so it is one of the word's nearest neighbours in the teacher's input-embedding space (for whole-word
WordPiece tokens), which mostly share the part of speech; other words fall back to a random word.

--rules tinybert applies TinyBERT's (Jiao et al. 2020) instead, which keep a sentence's length and shape (for
CoLA, where a dropped or random word changes the answer): each word is replaced with p 0.4 by one of its
nearest neighbours, the same embedding-space neighbours standing in for TinyBERT's masked-LM and GloVe
candidates (neither model can be fetched here); a word without neighbours is kept.

Example:
    python scripts/augment.py --train ../shared/data/sst2/train.tsv --embeddings build/sst2/tier2_torch/best \\
        --per-sentence 4 --output build/sst2/augmented.txt
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

import _common
from _common import log

from tango_edge.data import read_tsv


# Each rule set's probabilities, and whether a word with no neighbours becomes a random word or stays.
RULES = {
    "tang": {"p_mask": 0.1, "p_similar": 0.1, "p_random": 0.05, "p_ngram": 0.25, "random_fallback": True},
    "tinybert": {"p_mask": 0.0, "p_similar": 0.4, "p_random": 0.0, "p_ngram": 0.0, "random_fallback": False},
}


def neighbour_table(words: list[str], model_dir: str, k: int = 8) -> dict[str, list[str]]:
    """k nearest neighbours (cosine) of each word that is a single token of the teacher's vocabulary."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    weights = next(v for name, v in load_file(str(Path(model_dir) / "model.safetensors")).items() if name.endswith("word_embeddings.weight"))
    single = [(w, tokenizer.token_to_id(w)) for w in words]
    single = [(w, i) for w, i in single if i is not None and w.isalpha()]
    vecs = weights[[i for _, i in single]].astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-8
    k = min(k, len(single) - 1)  # a small vocabulary has fewer neighbours to offer
    table = {}
    if k < 1:
        return table
    for start in range(0, len(single), 2048):
        sims = vecs[start : start + 2048] @ vecs.T
        top = np.argpartition(-sims, k, axis=1)[:, : k + 1]  # the word itself and its k nearest
        for row, cands in enumerate(top):
            word = single[start + row][0]
            table[word] = [single[c][0] for c in cands if single[c][0] != word][:k]
    return table


def augment_sentence(words: list[str], rng: random.Random, vocab: list[str], neighbours: dict, p_mask: float, p_similar: float, p_random: float, p_ngram: float, mask_token: str = "[MASK]", random_fallback: bool = True) -> str:
    out = []
    for word in words:
        r = rng.random()
        if r < p_mask:
            out.append(mask_token)
        elif r < p_mask + p_similar:
            if neighbours.get(word):
                out.append(rng.choice(neighbours[word]))
            else:
                out.append(rng.choice(vocab) if random_fallback else word)
        elif r < p_mask + p_similar + p_random:
            out.append(rng.choice(vocab))
        else:
            out.append(word)
    if rng.random() < p_ngram and len(out) > 1:
        n = rng.randint(1, min(5, len(out)))
        start = rng.randint(0, len(out) - n)
        out = out[start : start + n]
    return " ".join(out)


def augment(sentences: list, per_sentence: int, seed: int, neighbours: dict, min_words: int = 3, long_words: int | None = None, per_long_sentence: int = 0, **probabilities) -> list:
    """New texts (none equal to an original): `per_sentence` tries for each original of >= min_words words,
    `per_long_sentence` for those of >= long_words (when given). A (first, second) pair gets the rules applied
    to each of its sentences, independently; its length is its longer sentence's."""
    rng = random.Random(seed)
    originals = set(sentences)
    vocab = sorted({w for s in sentences for part in sentence_parts(s) for w in part.split()})
    seen, out = set(), []
    for sentence in sentences:
        parts = [part.split() for part in sentence_parts(sentence)]
        length = max(len(words) for words in parts)
        if length < min_words:
            continue
        tries = per_long_sentence if long_words is not None and length >= long_words else per_sentence
        for _ in range(tries):
            pieces = tuple(augment_sentence(words, rng, vocab, neighbours, **probabilities) for words in parts)
            new = pieces[0] if isinstance(sentence, str) else pieces
            if new not in originals and new not in seen:
                seen.add(new)
                out.append(new)
    return out


def sentence_parts(text) -> tuple[str, ...]:
    return (text,) if isinstance(text, str) else tuple(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True, help="labelled TSV (its text column is augmented)")
    p.add_argument("--text-columns", default="sentence", help="one column, or two comma-separated for pair tasks (each sentence of a pair is augmented; output lines are tab-separated pairs)")
    p.add_argument("--label-column", default="label")
    p.add_argument("--embeddings", default=None, help="transformers folder whose word embeddings pick similar words (default: the base model)")
    p.add_argument("--per-sentence", type=int, default=2)
    p.add_argument("--min-words", type=int, default=3)
    # SST-2's training rows are mostly short phrases (median 7 words) but inputs are sentences (dev median 19):
    # students distilled on phrases drift on long inputs, so the long rows get most of the augmentation.
    p.add_argument("--long-words", type=int, default=10, help="rows of at least this many words count as sentences")
    p.add_argument("--per-long-sentence", type=int, default=10)
    p.add_argument("--rules", choices=sorted(RULES), default="tang", help="tang: Tang et al.'s masking, similar and random words, n-grams; tinybert: similar words only, with p 0.4 (see above)")
    p.add_argument("--p-mask", type=float, default=None, help="override the rules' probability")
    p.add_argument("--p-similar", type=float, default=None)
    p.add_argument("--p-random", type=float, default=None)
    p.add_argument("--p-ngram", type=float, default=None)
    # BERT's mask token. Other vocabularies read it as word pieces ("[", "mask", "]" for MPNet, whose own is
    # <mask>): still a placeholder for a dropped word, the same text for teacher and students.
    p.add_argument("--mask-token", default="[MASK]", help="what a masked word becomes")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    _common.setup_logging()
    for name, value in RULES[args.rules].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    sentences = read_tsv(args.train, args.text_columns.split(","), args.label_column).texts
    words = sorted({w for s in sentences for part in sentence_parts(s) for w in part.split()})
    neighbours = neighbour_table(words, args.embeddings or _common.default_base_model())
    log.info("%d sentences, %d words, %d with embedding neighbours", len(sentences), len(words), len(neighbours))
    new = augment(sentences, args.per_sentence, args.seed, neighbours, min_words=args.min_words, long_words=args.long_words, per_long_sentence=args.per_long_sentence, p_mask=args.p_mask, p_similar=args.p_similar, p_random=args.p_random, p_ngram=args.p_ngram, mask_token=args.mask_token, random_fallback=args.random_fallback)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(_common.corpus_lines(new)) + "\n", encoding="utf-8")
    settings = {k: getattr(args, k) for k in ("rules", "per_sentence", "long_words", "per_long_sentence", "min_words", "p_mask", "p_similar", "p_random", "p_ngram", "mask_token", "seed")}
    Path(args.output).with_suffix(".json").write_text(json.dumps({"sentences": len(new), **settings}, indent=2))  # for the model card
    log.info("wrote %d augmented sentences to %s", len(new), args.output)


if __name__ == "__main__":
    main()
