"""Extractive summaries: central, non-redundant sentences ranked with MiniLM sentence vectors."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from nlpserve.encoder import default_encoder_key, mean_pool
from nlpserve.resources import checksum, minilm_dir, minilm_version
from nlpserve.tokens import TokenBatch, TokenizerSpec, default_spec

TERMINALS = {".", "!", "?"}
CLOSERS = set("\"')]}”’»")
ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "ft", "inc", "corp", "ltd", "co",
    "vs", "etc", "gen", "gov", "sen", "rep", "lt", "col", "capt", "sgt", "no", "fig", "approx",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "est",
}  # fmt: skip
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
    period after a known abbreviation or a single letter (``Inc.``, ``U.S.``) does not end one.
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
    if text[spans[j][0]] == "." and j > 0 and spans[j - 1][1] == spans[j][0]:
        previous = text[spans[j - 1][0] : spans[j - 1][1]]
        if previous.lower() in ABBREVIATIONS or (len(previous) == 1 and previous.isalpha()):
            return False
    return True


class ExtractiveSummarizer:
    """A head over the shared encoder's token vectors of the whole text (windowed when long):
    each sentence's vector is the mean of its contextual token vectors.

    Pick the ``ratio`` most central sentences (at most ``max_sentences`` and
    ``max_chars``) and return them in their original order with their character offsets.

    Centrality is a sentence's cosine similarity to the text's centroid (the
    token-weighted mean of its sentence vectors); each pick is penalised by its highest
    similarity to the sentences already picked (maximal marginal relevance).
    """

    name = "extractive-all-MiniLM-L6-v2"

    def __init__(
        self,
        ratio: float = 0.3,
        max_sentences: int = 3,
        max_chars: int = 800,
        redundancy: float = 0.5,
    ) -> None:
        self.encoder = default_encoder_key()
        self.ratio = ratio
        self.max_sentences = max_sentences
        self.max_chars = max_chars
        self.redundancy = redundancy

    @property
    def spec(self) -> TokenizerSpec:
        return default_spec()

    def to(self, device: torch.device) -> None:
        """Ranking a few sentences runs on the CPU, where the vectors arrive."""

    def info(self) -> dict:
        weights = checksum(minilm_dir() / "model.safetensors")
        return {"name": self.name, "version": minilm_version(), "checksum": weights}

    def select(self, sentences: list[Sentence], vecs: np.ndarray) -> list[int]:
        """Indices of the picked sentences, in text order."""
        n = len(sentences)
        if n == 0:
            return []
        k = min(self.max_sentences, max(1, math.ceil(n * self.ratio)))
        weights = np.array([x.last - x.first for x in sentences], dtype=np.float32)
        centroid = weights @ vecs
        centrality = vecs @ (centroid / max(float(np.linalg.norm(centroid)), 1e-9))
        picked: list[int] = []
        budget = self.max_chars
        while len(picked) < k:
            # Similarity to the picked ones only: n x k, never the n x n matrix of a text of many sentences.
            penalty = (vecs @ vecs[picked].T).max(1) if picked else np.zeros(n)
            score = centrality - self.redundancy * penalty
            fits = [
                i for i in range(n)
                if i not in picked and sentences[i].end - sentences[i].start <= budget
            ]  # fmt: skip
            if not fits:
                break
            best = max(fits, key=lambda i: score[i])
            picked.append(best)
            budget -= sentences[best].end - sentences[best].start + 1
        if not picked:  # every sentence is longer than max_chars: cut the most central one
            picked = [int(centrality.argmax())]
        return sorted(picked)

    def _clip(self, text: str, s: Sentence) -> tuple[int, int]:
        if s.end - s.start <= self.max_chars:
            return s.start, s.end
        cut = text.rfind(" ", s.start, s.start + self.max_chars)
        return s.start, cut if cut > s.start else s.start + self.max_chars

    @staticmethod
    def sentence_vectors(tokens: np.ndarray, sentences: list[Sentence], prefix: int) -> np.ndarray:
        """Mean of each sentence's token vectors (``tokens`` starts with ``prefix`` special ones), L2-normalised."""
        return mean_pool([tokens[prefix + x.first : prefix + x.last] for x in sentences], tokens.shape[1])

    def __call__(self, batch: TokenBatch, rows: list[int], vectors: list[np.ndarray]) -> list[dict]:
        """``vectors[k]``: the encoder's token vectors of ``rows[k]``."""
        out = []
        for i, tokens in zip(rows, vectors):
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
