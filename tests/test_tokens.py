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
    from nlpserve.tokens import TokenCache, Tokenizer

    now = [0.0]
    tok = Tokenizer(cache=TokenCache(max_bytes=10_000, ttl_s=300, timer=lambda: now[0]))
    first = tok(["a b", "c d"])
    again = tok(["c d", "a b", "a b"])
    assert tok.counts["calls"] == 1 and tok.counts["cache_hits"] == 2
    assert again.ids.tolist() == first.ids[first.span(1)].tolist() + 2 * first.ids[first.span(0)].tolist()
    now[0] = 301.0  # past the TTL: everything is tokenized again
    tok(["a b"])
    assert tok.counts["calls"] == 2


def test_cache_is_bounded_by_bytes_not_by_entries():
    from nlpserve.tokens import TokenCache, Tokenizer

    tok = Tokenizer(cache=TokenCache(max_bytes=110_000, ttl_s=300))
    tok([f"short text number {i}" for i in range(100)])
    assert len(tok.cache) == 100  # 100 short texts fit (~14 kB)
    long = "word " * 5_000  # ~5k tokens: ~105 kB of arrays and text
    tok([long])
    assert long in tok.cache and tok.cache.currsize <= 110_000
    assert len(tok.cache) < 100  # the long text pushed short ones out, least recently used first
    assert "short text number 99" in tok.cache and "short text number 0" not in tok.cache
    huge = "word " * 50_000  # larger than the whole cache: tokenized, not kept, nothing evicted for it
    kept = len(tok.cache)
    assert tok([huge]).splits[1] == 50_000
    assert huge not in tok.cache and len(tok.cache) == kept


def test_join_puts_batches_end_to_end_and_renumbers_rows(tokenizer):
    a, b = tokenizer(["one two", "three"]), tokenizer(["four five six"])
    joined, rows = TokenBatch.join([a, b], [[1], [0]])
    assert joined.texts == ["one two", "three", "four five six"] and rows == [1, 2]
    for i, (src, k) in enumerate([(a, 0), (a, 1), (b, 0)]):
        assert (joined.ids[joined.span(i)] == src.ids[src.span(k)]).all()
        assert (joined.offsets[joined.span(i)] == src.offsets[src.span(k)]).all()
        assert (joined.word_ids[joined.span(i)] == src.word_ids[src.span(k)]).all()
