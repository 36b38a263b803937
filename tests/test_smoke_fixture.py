from tango_edge import Cascade


def test_fixture_builds(tiny_cascade, mixed_sentences):
    with Cascade.from_dir(tiny_cascade) as c:
        preds = c.predict(mixed_sentences[:50])
    assert len(preds) == 50 and {p.tier for p in preds} == {1, 2}
