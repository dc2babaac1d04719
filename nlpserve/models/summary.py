"""Extractive summaries: central, non-redundant sentences ranked with MiniLM sentence vectors."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from nlpserve.cancel import Stop, check
from nlpserve.models.encoder import default_encoder_key, mean_pool
from nlpserve.resources import checksum, minilm_dir, minilm_version
from nlpserve.schemas import SummarySettings
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec

TERMINALS = {".", "!", "?"}
CLOSERS = set("\"')]}”’»")
OPENERS = "\"'([{“‘«"
# They come before what they qualify (a name, an example): a period after them never ends a sentence.
TITLES = {
    "mr", "mrs", "ms", "dr", "prof", "st", "mt", "ft", "gen", "gov", "sen", "rep", "lt", "col", "capt",
    "sgt", "rev", "vs", "e.g", "i.e", "cf",
}  # fmt: skip
# Abbreviations only before a number ("No. 5", "Fig. 3"); elsewhere "no." is the word.
NUMBER_SIGNS = {"no", "nos", "fig", "figs", "vol"}
# They may end a sentence as well as sit inside one: they end it when a clause starts after them.
ABBREVIATIONS = {
    "sr", "jr", "inc", "corp", "ltd", "co", "etc", "approx", "est",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip
# Capitalised, these start a clause ("in the U.S. She said"), unlike a name ("U.S. Senate").
STARTERS = {
    "i", "you", "he", "she", "it", "we", "they", "the", "a", "an", "this", "that", "these", "those",
    "his", "her", "its", "our", "their", "my", "your", "some", "many", "most", "all", "both", "each",
    "every", "several", "such", "another", "no", "nobody", "none", "nothing", "neither", "not", "never",
    "but", "and", "or", "so", "yet", "however", "meanwhile", "still", "then", "now", "also", "instead",
    "there", "here", "thus", "later", "earlier", "today", "yesterday", "when", "while", "if", "after",
    "before", "since", "although", "though", "because", "as", "in", "on", "at", "for", "by", "with",
    "from", "during", "under", "despite", "until", "what", "who", "why", "how", "where", "which",
}  # fmt: skip
INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # "J", "U.S", "a.m"
NEXT_WORD = re.compile(f"[{re.escape(OPENERS)}]*([^\\W\\d_]+)(\\.?)")  # the word and a period right after it
PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass
class Sentence:
    start: int  # characters
    end: int
    first: int  # tokens, relative to the text's first token
    last: int  # exclusive


def split_sentences(text: str, offsets: np.ndarray) -> list[Sentence]:
    """Rule-based sentence split over the shared tokens (no second tokenizer).

    A sentence ends at ``.``, ``!`` or ``?`` (with any closing quotes or brackets) followed
    by white space and a word that does not start in lower case, or at a blank line. A
    period after a title (``Dr.``, ``Mr.``, ``St.``) does not end one; nor does one after an
    abbreviation (``Inc.``, ``Sept.``) or initials (``J.``, ``U.S.``) unless a clause starts
    after it (``She``, ``The``, ``Nobody``); ``No.`` and ``Fig.`` are abbreviations only
    before a number.
    """
    spans = offsets.tolist()
    n = len(spans)
    out: list[Sentence] = []
    first = 0
    for k in range(n):
        if k + 1 < n:
            gap = text[spans[k][1] : spans[k + 1][0]]
            if not gap:
                continue
            if not PARAGRAPH.search(gap) and not _ends_sentence(text, spans, k, gap):
                continue
        out.append(Sentence(spans[first][0], spans[k][1], first, k + 1))
        first = k + 1
    return out


def _ends_sentence(text: str, spans: list, k: int, gap: str) -> bool:
    if not gap.isspace():
        return False
    j = k
    while j >= 0 and text[spans[j][0] : spans[j][1]] in CLOSERS:
        j -= 1
    if j < 0 or text[spans[j][0] : spans[j][1]] not in TERMINALS:
        return False
    following = text[spans[k + 1][0]]
    if following.islower():
        return False
    if text[spans[j][0]] != ".":
        return True
    word = _word_before(text, spans, j).lower()
    if word in TITLES:
        return False
    if word in NUMBER_SIGNS:
        return not following.isdigit()
    if word in ABBREVIATIONS or INITIALS.fullmatch(word):
        return _starts_clause(text, spans[k + 1][0])
    return True


def _word_before(text: str, spans: list, j: int) -> str:
    """The word the period at token ``j`` closes, without it or opening quotes: "U.S" for "(U.S."."""
    i = j
    while i > 0 and spans[i - 1][1] == spans[i][0]:
        i -= 1
    return text[spans[i][0] : spans[j][0]].lstrip(OPENERS)


def _starts_clause(text: str, start: int) -> bool:
    word = NEXT_WORD.match(text, start)
    if word is None or not word[1][0].isupper():
        return False
    # "J. A. Smith": a one-letter word followed by a period is another initial.
    return word[1].lower() in STARTERS and not (len(word[1]) == 1 and word[2])


class ExtractiveSummarizer:
    """A head over the shared encoder's token vectors of the whole text (windowed when long):
    each sentence's vector is the mean of its contextual token vectors.

    Pick the ``ratio`` most central sentences (at most ``max_sentences`` and
    ``max_chars``) and return them in their original order with their character offsets.

    Centrality is a sentence's cosine similarity to the text's centroid (the
    token-weighted mean of its sentence vectors); each pick is penalised by its highest
    similarity to the sentences already picked (maximal marginal relevance). Sentence ``i``
    (from 0) also gets ``lead_prior / (i + 1)``: a news story puts its point first, and
    centrality alone often prefers a later sentence that restates it; 0 turns it off.
    """

    name = "extractive-all-MiniLM-L6-v2"

    def __init__(self, settings: SummarySettings | None = None) -> None:
        """``settings``: the summary knobs (ratio, max_sentences, ...); SummarySettings' defaults if None."""
        self.encoder = default_encoder_key()
        self.configure(settings or SummarySettings())

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> torch.device:
        """Ranking a few sentences runs on the CPU, where the vectors arrive."""
        return torch.device("cpu")

    def configure(self, settings: SummarySettings) -> None:
        self.settings = settings

    def info(self) -> dict:
        weights = checksum(minilm_dir() / "model.safetensors")
        return {"name": self.name, "version": minilm_version(), "checksum": weights}

    def select(self, sentences: list[Sentence], vecs: np.ndarray) -> list[int]:
        """Indices of the picked sentences, in text order."""
        n = len(sentences)
        if n == 0:
            return []
        k = min(self.settings.max_sentences, max(1, math.ceil(n * self.settings.ratio)))
        weights = np.array([x.last - x.first for x in sentences], dtype=np.float32)
        centroid = weights @ vecs
        centrality = vecs @ (centroid / max(float(np.linalg.norm(centroid)), 1e-9))
        prior = self.settings.lead_prior / np.arange(1, n + 1)
        picked: list[int] = []
        budget = self.settings.max_chars
        while len(picked) < k:
            # Similarity to the picked ones only: n x k, never the n x n matrix of a text of many sentences.
            penalty = (vecs @ vecs[picked].T).max(1) if picked else np.zeros(n)
            score = centrality - self.settings.redundancy * penalty + prior
            fits = [
                i for i in range(n)
                if i not in picked and sentences[i].end - sentences[i].start <= budget
            ]  # fmt: skip
            if not fits:
                break
            best = max(fits, key=lambda i: score[i])
            picked.append(best)
            budget -= sentences[best].end - sentences[best].start + 1
        if not picked:  # every sentence is longer than max_chars: cut the best one
            picked = [int((centrality + prior).argmax())]
        return sorted(picked)

    def _clip(self, text: str, s: Sentence) -> tuple[int, int]:
        if s.end - s.start <= self.settings.max_chars:
            return s.start, s.end
        cut = text.rfind(" ", s.start, s.start + self.settings.max_chars)
        return s.start, cut if cut > s.start else s.start + self.settings.max_chars

    @staticmethod
    def sentence_vectors(tokens: np.ndarray, sentences: list[Sentence], prefix: int) -> np.ndarray:
        """Mean of each sentence's token vectors (``tokens`` starts with ``prefix`` special ones), L2-normalised."""
        return mean_pool([tokens[prefix + x.first : prefix + x.last] for x in sentences], tokens.shape[1])

    def __call__(
        self, batch: TokenBatch, rows: list[int], vectors: list[np.ndarray], stop: Stop | None = None
    ) -> list[dict]:
        """``vectors[k]``: the encoder's token vectors of ``rows[k]``. Once ``stop`` is set, raises
        Cancelled before the next text."""
        out = []
        for i, tokens in zip(rows, vectors):
            check(stop)
            text = batch.texts[i]
            sentences = split_sentences(text, batch.offsets[batch.span(i)])
            picks = self.select(sentences, self.sentence_vectors(tokens, sentences, len(batch.prefix)))
            picked = [self._clip(text, sentences[p]) for p in picks]
            out.append(
                {
                    "summary_text": " ".join(text[a:b] for a, b in picked),
                    "sentences": [{"start": a, "end": b} for a, b in picked],
                }
            )
        return out
