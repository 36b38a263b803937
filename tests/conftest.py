"""Session fixtures: tiny real models exported to OpenVINO IR once, so tests run real inference in seconds."""

from __future__ import annotations

import random

import pytest

import tiny_models


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Profiles go to a per-test cache folder, never to the user's."""
    monkeypatch.setenv("TANGO_EDGE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def tiny_irs(tmp_path_factory):
    """Three exported tiers: two sharing a tokenizer, one with a tokenizer of its own."""
    root = tmp_path_factory.mktemp("tiny")
    irs = {}
    for name, seed, vocab in (("a", 1, 120), ("b", 2, 120), ("c", 3, 100)):
        torch_dir = tiny_models.make_bert(root / f"{name}_torch", seed=seed, vocab_size=vocab)
        irs[name] = tiny_models.export_ir(torch_dir, root / f"{name}_ir")
    return irs


@pytest.fixture(scope="session")
def tiny_cascade(tiny_irs, tmp_path_factory):
    """A cascade whose tiers share one tokenizer (tokenized once)."""
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("cascades") / "shared", tiny_irs["a"], tiny_irs["b"])


@pytest.fixture(scope="session")
def tiny_cascade_two_tokenizers(tiny_irs, tmp_path_factory):
    """A cascade whose tier 2 tokenizes deferred inputs itself."""
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("cascades") / "separate", tiny_irs["a"], tiny_irs["c"])


def sentences(n: int, seed: int = 0) -> list[str]:
    """Inputs of mixed lengths (1 to ~90 words) built from the tiny vocabulary."""
    rng = random.Random(seed)
    words = " ".join(tiny_models.CORPUS).split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 90]))) for _ in range(n)]


@pytest.fixture(scope="session")
def mixed_sentences():
    return sentences(600)
