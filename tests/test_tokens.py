import numpy as np

from nlpserve.tokens import TokenBatch


def test_batch_is_flat_and_offsets_point_into_text(tokenizer):
    texts = ["Apple Inc. hired  Tim Cook.", "", "Über café\n\nnaïve"]
    b = tokenizer(texts)
    assert len(b) == 3
    assert b.splits.tolist()[0] == 0 and b.splits[-1] == len(b.ids)
    assert b.span(1) == slice(b.splits[1], b.splits[1])  # empty text has no tokens
    for i, text in enumerate(texts):
        s = b.span(i)
        for start, end in b.offsets[s].tolist():
            assert 0 <= start < end <= len(text)
    words = [texts[0][a:e] for a, e in b.offsets[b.span(0)].tolist()]
    assert words[:3] == ["Apple", "Inc", "."]
    assert b.ids.dtype == np.int32 and b.offsets.shape == (len(b.ids), 2)
    assert b.specials == ((101,), (102,), 0)


def test_long_text_is_not_truncated(tokenizer):
    b = tokenizer(["word " * 2000])
    assert b.splits[1] == 2000


def test_cache_skips_known_texts_and_expires():
    from cachetools import TTLCache

    from nlpserve.tokens import Tokenizer

    now = [0.0]
    tok = Tokenizer(cache=TTLCache(maxsize=2, ttl=300, timer=lambda: now[0]))
    first = tok(["a b", "c d"])
    again = tok(["c d", "a b", "a b"])
    assert tok.counts["calls"] == 1 and tok.counts["cache_hits"] == 2
    assert again.ids.tolist() == first.ids[first.span(1)].tolist() + 2 * first.ids[first.span(0)].tolist()
    tok(["e f"])  # evicts the least recently used of two entries
    assert tok.counts["calls"] == 2 and len(tok.cache) == 2
    now[0] = 301.0  # past the TTL: everything is tokenized again
    tok(["e f"])
    assert tok.counts["calls"] == 3


def test_join_puts_batches_end_to_end_and_renumbers_rows(tokenizer):
    a, b = tokenizer(["one two", "three"]), tokenizer(["four five six"])
    joined, rows = TokenBatch.join([a, b], [[1], [0]])
    assert joined.texts == ["one two", "three", "four five six"] and rows == [1, 2]
    for i, (src, k) in enumerate([(a, 0), (a, 1), (b, 0)]):
        assert (joined.ids[joined.span(i)] == src.ids[src.span(k)]).all()
        assert (joined.offsets[joined.span(i)] == src.offsets[src.span(k)]).all()
        assert (joined.word_ids[joined.span(i)] == src.word_ids[src.span(k)]).all()
