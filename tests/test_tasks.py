"""The three task classes on the real default models, without Ray."""

import threading

import numpy as np
import pytest
from samples import NEWS

from nlpserve.models.encoder import MiniLMEncoder, mean_pool
from nlpserve.models.ner import SpacyNER
from nlpserve.models.sentiment import SentimentModel
from nlpserve.models.summary import ExtractiveSummarizer, split_sentences
from nlpserve.models.windows import windows
from nlpserve.resources import minilm_dir
from nlpserve.schemas import SummarySettings


@pytest.fixture(scope="module")
def encoder():
    return MiniLMEncoder()


@pytest.fixture(scope="module")
def ner():
    return SpacyNER()


def test_ner_finds_org_and_person_with_offsets(tokenizer, ner):
    b = tokenizer([NEWS])
    ents = ner(b, [0])[0]
    found = {(e["word"], e["entity_group"]) for e in ents}
    assert ("Apple Inc.", "ORG") in found
    assert ("Tim Cook", "PERSON") in found
    assert ("Goldman Sachs", "ORG") in found
    assert ("New York", "GPE") in found
    for e in ents:
        assert NEWS[e["start"] : e["end"]] == e["word"]
        assert set(e) == {"entity_group", "score", "word", "start", "end"}
    # Clear entities get a confident score (0.96-0.9997 here), not just any probability.
    scores = {(e["word"], e["entity_group"]): e["score"] for e in ents}
    clear = [("Apple Inc.", "ORG"), ("Tim Cook", "PERSON"), ("Goldman Sachs", "ORG"), ("New York", "GPE")]
    assert all(scores[e] > 0.9 for e in clear), scores


def test_ner_doc_text_equals_input_whatever_the_white_space(tokenizer, ner):
    text = "  Barack Obama\tvisited\n\nParis,  France. \x07 Done "
    b = tokenizer([text])
    from nlpserve.models.ner import word_spans

    s = b.span(0)
    doc = ner.doc(text, ner.words(text, word_spans(b.offsets[s], b.word_ids[s])))
    assert doc.text == text
    ents = {(e["word"], e["entity_group"]) for e in ner(b, [0])[0]}
    assert ("Barack Obama", "PERSON") in ents


def test_ner_rejoins_words_spacy_keeps_together(tokenizer, ner):
    text = "The U.S. unit of Acme Corp. earned $5.3 billion; Apple's CEO didn't say... "
    text += "@acme_news https://acme.com/q3 I-880"
    b = tokenizer([text])
    from nlpserve.models.ner import word_spans

    s = b.span(0)
    words = [text[a:e] for a, e in ner.words(text, word_spans(b.offsets[s], b.word_ids[s]))]
    for w in ("U.S.", "Corp.", "5.3", "'s", "did", "n't", "...", "@acme_news", "https://acme.com/q3", "I-880"):
        assert w in words


def test_ner_only_runs_requested_rows(tokenizer, ner):
    b = tokenizer(["Angela Merkel met Emmanuel Macron in Berlin.", "nothing here"])
    out = ner(b, [0])
    assert len(out) == 1
    assert {"PERSON", "GPE"} <= {e["entity_group"] for e in out[0]}


def embed(encoder, rows, prefix, suffix, pad_id):
    """One normalised sentence vector per row: the mean of its token vectors (sentence-transformers)."""
    vectors, splits = encoder.token_vectors(rows, prefix, suffix, pad_id)
    return mean_pool([vectors[a:b] for a, b in zip(splits[:-1], splits[1:])], encoder.dim)


def vectors(encoder, batch, rows):
    (encoded,) = encoder.encode([(batch, rows)])
    return [encoded.row(i) for i in rows]


@pytest.fixture(scope="module")
def sentence_transformer():
    """The reference: sentence-transformers itself (a dependency of the model package) running the
    package's own pipeline (its modules.json: Transformer, mean Pooling, Normalize) in one unwindowed
    pass of at most 256 tokens, with its own tokenizer."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def test_encoder_matches_sentence_transformers_pooling(tokenizer, encoder, sentence_transformer):
    short = ["The quick brown fox jumps over the lazy dog.", NEWS]  # 10 and 79 tokens
    b = tokenizer(short)
    rows = [b.ids[b.span(i)] for i in range(len(short))]
    assert all(len(r) + 2 <= sentence_transformer.max_seq_length for r in rows)  # the reference truncates none
    reference = sentence_transformer.encode(short, convert_to_numpy=True)
    # The same float32 weights through our windowing and pooling: the same vectors.
    np.testing.assert_allclose(embed(MiniLMEncoder(kernel="torch"), rows, *b.specials), reference, atol=1e-5)
    # The served default (onnx-int8): cosine ~0.994 here (README: ~0.99 to float32).
    served = embed(encoder, rows, *b.specials)
    assert np.all(np.sum(served * reference, axis=1) > 0.98)

    long = tokenizer(["word " * 700])
    vecs = embed(encoder, [long.ids[long.span(0)]], *long.specials)
    assert vecs.shape == (1, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # A long row is covered by overlapping windows; each token is pooled once.
    wins = windows(700, encoder.window - 2, encoder.stride)
    assert wins[0][0] == 0 and wins[-1][1] == 700
    owned = sum(end - start - skip for start, end, skip in wins)
    assert owned == 700


def test_sentiment_labels_clear_reviews(tokenizer, encoder):
    model = SentimentModel()
    texts = [
        "I absolutely loved this phone. The battery lasts forever and the screen is gorgeous. Best purchase ever!",
        "Terrible product. It broke after two days, support was rude and I want my money back. Awful.",
    ]
    b = tokenizer(texts)
    out = model(b, [0, 1], vectors(encoder, b, [0, 1]))
    assert out[0]["label"] == "positive"
    assert out[1]["label"] == "negative"
    for r in out:
        # Clear reviews: a confident score (0.99 and 0.998 here; any argmax of 3 classes is over 1/3).
        assert set(r) == {"label", "score"} and r["score"] > 0.9


def test_sentences_split_on_real_boundaries_only(tokenizer):
    text = 'Apple Inc. rose. Mr. Smith said "yes." The U.S. economy grew! Really? Yes\n\nNew paragraph'
    b = tokenizer([text])
    got = [text[s.start : s.end] for s in split_sentences(text, b.offsets[b.span(0)])]
    assert got == [
        "Apple Inc. rose.",
        'Mr. Smith said "yes."',
        "The U.S. economy grew!",
        "Really?",
        "Yes",
        "New paragraph",
    ]


def test_summary_picks_input_sentences_in_order(tokenizer, encoder):
    model = ExtractiveSummarizer(SummarySettings(ratio=0.5, max_sentences=3))
    b = tokenizer([NEWS, "Only one sentence here."])
    out = model(b, [0, 1], vectors(encoder, b, [0, 1]))
    first, single = out
    sentences = [NEWS[s.start : s.end] for s in split_sentences(NEWS, b.offsets[b.span(0)])]
    picked = [NEWS[s["start"] : s["end"]] for s in first["sentences"]]
    assert 1 <= len(picked) <= 3 < len(sentences)
    assert all(p in sentences for p in picked)
    assert [s["start"] for s in first["sentences"]] == sorted(s["start"] for s in first["sentences"])
    assert first["summary_text"] == " ".join(picked)
    assert single["summary_text"] == "Only one sentence here."


def test_summary_is_bounded(tokenizer, encoder):
    model = ExtractiveSummarizer(SummarySettings(max_chars=100))
    text = "word " * 300
    b = tokenizer([text])
    out = model(b, [0], vectors(encoder, b, [0]))[0]
    assert 0 < len(out["summary_text"]) <= 100
    s = out["sentences"][0]
    assert text[s["start"] : s["end"]] == out["summary_text"]


def test_one_encoder_pass_serves_several_batches_and_heads_read_their_rows(tokenizer, encoder):
    first, second = tokenizer([NEWS, "Paris is lovely."]), tokenizer(["word " * 700])
    joined = encoder.encode([(first, [1, 0]), (second, [0])])
    alone = [encoder.encode([(first, [i])])[0].row(i) for i in (0, 1)] + [encoder.encode([(second, [0])])[0].row(0)]
    assert [e.rows for e in joined] == [[1, 0], [0]] and len({e.compute_ms for e in joined}) == 1
    together = [joined[0].row(0), joined[0].row(1), joined[1].row(0)]
    for a, b in zip(together, alone):
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)
    assert together[0].shape == (len(first.ids[first.span(0)]) + 2, 384)  # [CLS] + tokens + [SEP]
    assert joined[0].key == SentimentModel().encoder == ExtractiveSummarizer().encoder == encoder.key


def test_the_encoder_refuses_tokens_of_another_tokenizer(tiny_models, encoder):
    from nlpserve.errors import EncoderMismatch
    from nlpserve.models.hf import Seq2SeqSummarizer
    from nlpserve.tokens import Tokenizer

    other = Seq2SeqSummarizer("summary", str(tiny_models["summary"]))
    with pytest.raises(EncoderMismatch):
        encoder.encode([(Tokenizer(other.spec)(["Paris."]), [0])])


class StopAfter:
    """A Stop that is set once it has been asked more than ``n`` times: the caller gives up mid-call."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def is_set(self) -> bool:
        self.asked += 1
        return self.asked > self.n


def test_the_encoder_stops_between_windows_once_its_caller_gives_up(tokenizer, encoder):
    from nlpserve.cancel import Cancelled

    batch = tokenizer(["word " * 2000])  # 2000 tokens: 9 windows of 254 tokens, overlapping by 32
    stop = StopAfter(3)
    with pytest.raises(Cancelled):
        encoder.encode([(batch, [0])], stop)
    assert stop.asked == 4  # three windows ran, the fourth was never started
    (done,) = encoder.encode([(batch, [0])], StopAfter(100))
    assert done.row(0).shape == (2002, 384)


def test_two_threads_run_windows_side_by_side_to_the_same_vectors_and_stop_between_windows(
    tokenizer, encoder, monkeypatch
):
    from nlpserve.cancel import Cancelled
    from nlpserve.models import build_encoder
    from nlpserve.models.kernels import OnnxKernel
    from nlpserve.schemas import EncoderSettings

    def window_threads(model: MiniLMEncoder) -> int:
        return model.kernel.session.get_session_options().intra_op_num_threads

    wide, calls, run = build_encoder(EncoderSettings()), [], OnnxKernel.__call__
    assert (wide.workers, window_threads(wide)) == (2, 1)  # the served default: one ORT thread per window
    assert window_threads(build_encoder(EncoderSettings(window_threads=2))) == 2

    def counted(kernel, ids, mask):
        if kernel is wide.kernel:
            calls.append(threading.get_ident())
        return run(kernel, ids, mask)

    monkeypatch.setattr(OnnxKernel, "__call__", counted)
    batch = tokenizer([NEWS, "word " * 700, "Paris is lovely."])  # 1 + 4 + 1 windows
    (alone,) = encoder.encode([(batch, [0, 1, 2])])
    (side,) = wide.encode([(batch, [0, 1, 2])])
    np.testing.assert_allclose(side.vectors, alone.vectors, atol=1e-4)
    assert len(calls) == 6 and len(set(calls)) == 2  # one window per call, on two threads
    calls.clear()
    with pytest.raises(Cancelled):
        wide.encode([(tokenizer(["word " * 2000]), [0])], StopAfter(3))  # 9 windows
    assert len(calls) == 3  # no window started once the caller gave up


def _spans(entity: dict) -> tuple:
    return entity["entity_group"], entity["word"], entity["start"], entity["end"]


def test_ner_parses_in_chunks_stops_between_them_and_answers_as_one_parse(tokenizer, ner, monkeypatch):
    from nlpserve.cancel import Cancelled
    from nlpserve.models.ner import CHUNK_WORDS

    texts = [f"{NEWS} " * 20, "Angela Merkel met Emmanuel Macron in Berlin.", f"{NEWS} " * 20]  # ~1500 words each
    batch = tokenizer(texts)
    alone = [ner(batch, [i])[0] for i in range(3)]
    parse, chunks = ner.parse, []
    monkeypatch.setattr(ner, "parse", lambda docs: chunks.append([len(d) for d in docs]) or parse(docs))
    chunked = ner(batch, [0, 1, 2])
    # The same entities as each text alone, and the same scores up to float rounding: a matrix product
    # over another batch shape may round differently (OpenBLAS on AVX2), as in test_ner.
    assert [[_spans(e) for e in ents] for ents in chunked] == [[_spans(e) for e in ents] for ents in alone]
    got, want = ([e["score"] for ents in side for e in ents] for side in (chunked, alone))
    assert np.allclose(got, want, rtol=0, atol=1e-5)
    assert len(chunks) == 2 and all(sum(c) <= CHUNK_WORDS or len(c) == 1 for c in chunks)
    stop = StopAfter(4)  # three texts made into docs, the first chunk parsed, then the caller gives up
    with pytest.raises(Cancelled):
        ner(batch, [0, 1, 2], stop)
    assert stop.asked == 5 and len(chunks) == 3
