"""NER kernels: spaCy's native parse with batched move scores vs the step-by-step loop (no Ray)."""

import numpy as np
import pytest
from samples import NEWS

from nlpserve.models.ner import PRESET, SpacyNER, word_spans

TEXTS = [
    NEWS,
    "  Barack Obama\tvisited\n\nParis,  France. \x07 Done ",  # white-space tokens, inside and between entities
    "Angela Merkel met Emmanuel Macron in Berlin on Monday and then flew to New York",  # ends inside an entity
    "Shares of Apple Inc. rose 3% to $190.5 on Friday, Goldman Sachs said.\n\nTim Cook   smiled.",
    "nothing to see here",
]


@pytest.fixture(scope="module")
def native():
    return SpacyNER()


@pytest.fixture(scope="module")
def stepwise():
    return SpacyNER(kernel="stepwise")


def make_docs(ner, batch):
    out = []
    for i, text in enumerate(batch.texts):
        s = batch.span(i)
        out.append(ner.doc(text, ner.words(text, word_spans(batch.offsets[s], batch.word_ids[s]))))
    return out


def test_native_and_stepwise_give_the_same_entities_and_scores(tokenizer, native, stepwise):
    b = tokenizer(TEXTS)
    rows = list(range(len(TEXTS)))
    fast, slow = native(b, rows), stepwise(b, rows)
    assert sum(len(ents) for ents in fast) >= 10
    for got, want in zip(fast, slow):
        assert [(e["start"], e["end"], e["entity_group"]) for e in got] == [
            (e["start"], e["end"], e["entity_group"]) for e in want
        ]
        assert np.allclose([e["score"] for e in got], [e["score"] for e in want], rtol=0, atol=1e-5)


def test_native_entities_are_spacys_own_greedy_parse(tokenizer, native, stepwise):
    b = tokenizer(TEXTS)
    ours = native(b, list(range(len(TEXTS))))
    # The stepwise instance's component is spaCy's unmodified NER; calling it runs spaCy's own parse.
    spacy_docs = [stepwise.ner(doc) for doc in make_docs(stepwise, b)]
    for got, doc in zip(ours, spacy_docs):
        assert [(e["start"], e["end"], e["entity_group"]) for e in got] == [
            (e.start_char, e.end_char, e.label_) for e in doc.ents
        ]


@pytest.mark.parametrize("kernel", ["native", "stepwise"])
def test_scores_are_probabilities(tokenizer, native, stepwise, kernel):
    ner = native if kernel == "native" else stepwise
    b = tokenizer(TEXTS)
    for probs in ner.parse(make_docs(ner, b)):
        assert np.all((probs > 0) & (probs <= 1))
    scores = [e["score"] for ents in ner(b, list(range(len(TEXTS)))) for e in ents]
    assert scores and all(0 < s <= 1 for s in scores) and np.median(scores) > 0.95, scores


def reference_parse(ner, docs):
    """The greedy parse step by step, with spaCy's validity asked afresh for every move of every state.

    Per doc and token: (p over spaCy's valid moves, p over the old coarse mask, spaCy's valid mask, move)."""
    names = ner.move_names
    inside = np.array([n[0] in "IL" for n in names])  # the old mask: I/L while an entity is open, else B/U/O
    out = [[] for _ in docs]
    step = ner.ner.model.predict(docs)
    states = ner.ner.moves.init_batch(docs)
    owner = {id(s): i for i, s in enumerate(states)}
    active = [s for s in states if not s.is_final()]
    while active:
        scores = np.asarray(step.predict(active))
        for state, row in zip(active, scores):
            valid = np.array([ner.ner.moves.is_valid(state, n) for n in names])
            coarse = inside if state.entity_is_open() else ~inside
            move = int(np.where(valid, row, -np.inf).argmax())
            p = [np.exp(row[move] - row[m].max()) / np.exp(row[m] - row[m].max()).sum() for m in (valid, coarse)]
            out[owner[id(state)]].append((p[0], p[1], valid, move))
        active = ner.ner.transition_states(active, scores)
    return out


def test_move_probability_is_over_spacys_valid_moves_not_the_coarse_mask(tokenizer, native):
    b = tokenizer(TEXTS)
    ref = reference_parse(native, make_docs(native, b))
    native.valid_masks.clear()  # the native kernel now asks spaCy (on replayed states) for every mask it needs
    docs = make_docs(native, b)
    presets = [d.to_array(PRESET) for d in docs]
    probs = native.parse(docs)
    for doc_ref, doc_probs, doc, pre in zip(ref, probs, docs, presets):
        assert np.allclose(doc_probs, [r[0] for r in doc_ref], rtol=0, atol=1e-5)
        # Every remembered mask is spaCy's own for the state it stands for.
        open_label = ""
        for (_, _, valid, move), key in zip(doc_ref, native._keys(doc, pre)):
            assert np.array_equal(native.valid_masks[(open_label, *key)], valid)
            open_label = native.open_label[move]
    # The texts hold states where the two masks differ enough to show in the probability.
    flat = [r for doc_ref in ref for r in doc_ref]
    differs = [abs(p - coarse) > 1e-3 for p, coarse, _, _ in flat]
    assert any(differs)
    got = np.concatenate(probs)
    coarse = np.array([r[1] for r in flat])
    assert np.all(np.abs(got - coarse)[differs] > 1e-3)


def test_last_token_and_white_space_exclude_moves(native):
    names = np.array(native.move_names)
    doc = native.doc("Paris  x", [(0, 5), (7, 8)])  # Paris, " ", x
    state = native.ner.moves.init_batch([doc])[0]
    native.ner.moves.apply_transition(state, "B-GPE")
    for t in (1, 2):
        valid = set(names[[native.ner.moves.is_valid(state, n) for n in names]])
        if t == 1:  # a white-space token inside an open GPE: only I-GPE or L-GPE
            assert valid == {"I-GPE", "L-GPE"}
            native.ner.moves.apply_transition(state, "I-GPE")
        else:  # the last token: the entity must close
            assert valid == {"L-GPE"}


def test_native_runs_the_token_vectors_once(tokenizer, native, monkeypatch):
    tok2vec = native.ner.model.get_ref("tok2vec")
    calls = []
    forward = tok2vec._func

    def counting(model, docs, is_train):
        calls.append(len(docs))
        return forward(model, docs, is_train)

    monkeypatch.setattr(tok2vec, "_func", counting)
    native(tokenizer(TEXTS), list(range(len(TEXTS))))
    assert calls == [len(TEXTS)]


def test_unknown_kernel_is_rejected():
    with pytest.raises(ValueError, match="kernel"):
        SpacyNER(kernel="beam")
