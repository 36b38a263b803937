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
def tiny_mpnet_irs(tmp_path_factory):
    """Two exported MPNet tiers sharing one tokenizer (MPNet's layout: <s> A </s>, pad id 1, no token_type_ids)."""
    root = tmp_path_factory.mktemp("tiny_mpnet")
    return {name: tiny_models.export_ir(tiny_models.make_mpnet(root / f"{name}_torch", seed=seed), root / f"{name}_ir") for name, seed in (("m1", 4), ("m2", 5))}


@pytest.fixture(scope="session")
def mixed_encoder_cascade(tiny_irs, tiny_mpnet_irs, tmp_path_factory):
    """Three tiers of two architectures: BERT -> MPNet -> MPNet (tokenized twice: once per tokenizer)."""
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("cascades") / "mixed", tiny_irs["a"], tiny_mpnet_irs["m1"], tiny_mpnet_irs["m2"], thresholds=[0.7, 0.75])


@pytest.fixture(scope="session")
def tiny_cascade(tiny_irs, tmp_path_factory):
    """A cascade whose tiers share one tokenizer (tokenized once)."""
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("cascades") / "shared", tiny_irs["a"], tiny_irs["b"])


@pytest.fixture
def three_tier_cascade(tiny_irs, tmp_path):
    """A private three-tier cascade: tiers a, b, c (c tokenizes for itself), thresholds 0.7 and 0.8."""
    return tiny_models.assemble_cascade(tmp_path / "three", tiny_irs["a"], tiny_irs["b"], tiny_irs["c"], thresholds=[0.7, 0.8])


@pytest.fixture(scope="session")
def tiny_cascade_two_tokenizers(tiny_irs, tmp_path_factory):
    """A cascade whose tier 2 tokenizes deferred inputs itself, in the version 1 layout (top-level threshold)."""
    return tiny_models.assemble_cascade(tmp_path_factory.mktemp("cascades") / "separate", tiny_irs["a"], tiny_irs["c"], legacy=True)


def sentences(n: int, seed: int = 0) -> list[str]:
    """Inputs of mixed lengths (1 to ~90 words) built from the tiny vocabulary."""
    rng = random.Random(seed)
    words = " ".join(tiny_models.CORPUS).split()
    return [" ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 90]))) for _ in range(n)]


@pytest.fixture(scope="session")
def mixed_sentences():
    return sentences(600)
