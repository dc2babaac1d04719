"""Your own Hugging Face models on the shared tokenization: token classification (NER), sequence
classification (sentiment) and seq2seq generation (summaries), loaded safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)
from transformers.utils import cached_file
from transformers.utils import logging as hf_logging

from nlpserve.cancel import Stop
from nlpserve.errors import describe
from nlpserve.models.windows import Piece, check_stride, padded_batches, window_pieces
from nlpserve.resources import checksum
from nlpserve.schemas import SummarySettings, TaskSettings
from nlpserve.tokens import TokenBatch, TokenizerSpec, special_tokens

# kind -> (Auto class, what its config's `architectures` must end with)
KINDS = {
    "token-classification": (AutoModelForTokenClassification, "ForTokenClassification"),
    "text-classification": (AutoModelForSequenceClassification, "ForSequenceClassification"),
    "summarization": (AutoModelForSeq2SeqLM, "ForConditionalGeneration"),
}


class ModelLoadError(RuntimeError):
    """A configured model cannot be served; the message names the task and the model."""


def load(task: str, kind: str, ref: str):
    """(model, tokenizer) for ``ref``, a hub id or a local directory.

    Only safetensors weights and a fast tokenizer are accepted, ``trust_remote_code`` stays off,
    and the config must name an architecture of ``kind`` whose weights all load (no head left
    randomly initialised)."""
    where = f"{task}: cannot load {kind} model {ref!r}"
    auto, suffix = KINDS[kind]
    if ref.startswith(("/", ".", "~")) and not Path(ref).expanduser().is_dir():
        raise ModelLoadError(f"{where}: no such directory")
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(ref, trust_remote_code=False)
    except Exception as e:
        raise ModelLoadError(f"{where}: no readable config.json ({describe(e)})") from e
    architectures = config.architectures or []
    if not any(a.endswith(suffix) for a in architectures):
        raise ModelLoadError(f"{where}: its config names {architectures or 'no architecture'}, not a *{suffix}")
    try:
        model, missing = auto.from_pretrained(
            ref, use_safetensors=True, trust_remote_code=False, output_loading_info=True
        )
    except Exception as e:
        raise ModelLoadError(f"{where}: no loadable safetensors weights ({describe(e)})") from e
    if missing["missing_keys"]:
        raise ModelLoadError(f"{where}: weights missing for {sorted(missing['missing_keys'])[:5]}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, trust_remote_code=False)
    except Exception as e:
        raise ModelLoadError(f"{where}: no loadable tokenizer ({describe(e)})") from e
    if not hasattr(tokenizer, "backend_tokenizer"):
        raise ModelLoadError(f"{where}: it has no fast tokenizer (tokenizer.json)")
    return model.eval(), tokenizer


class HFTask:
    """A transformers model of one ``kind`` over TokenBatches made with its own tokenizer.

    ``window`` caps the tokens per model call (default: the model's limit); longer texts are
    split into windows overlapping by ``stride`` tokens."""

    kind = ""
    encoder: str | None = None  # runs its own model: no shared encoder pass

    def __init__(
        self, task: str, ref: str, window: int | None = None, stride: int = 32, max_batch_tokens: int = 8192
    ) -> None:
        self.ref = ref
        self.model, self.tokenizer = load(task, self.kind, ref)
        self.spec = TokenizerSpec.of(self.tokenizer, ref)
        prefix, suffix = special_tokens(self.tokenizer.backend_tokenizer)
        limit = min(
            getattr(self.model.config, "max_position_embeddings", None) or 1 << 20,
            self.tokenizer.model_max_length or 1 << 20,
        )
        self.size = min(window or limit, limit) - len(prefix) - len(suffix)
        check_stride(self.size, stride)
        self.stride = stride
        self.max_batch_tokens = max_batch_tokens
        self.device = torch.device("cpu")
        # Everything the answers depend on: all weight shards, the config and the tokenizer files.
        self.checksum = checksum(Path(cached_file(ref, "config.json")).parent)

    def to(self, device: torch.device) -> torch.device:
        self.model.to(device)
        self.device = device
        return device

    def configure(self, settings: TaskSettings) -> None:
        """Window and stride are chosen at load; nothing else to change."""

    def info(self) -> dict:
        # The hub snapshot's commit when it came from the hub; a local directory has none.
        version = getattr(self.model.config, "_commit_hash", None) or "local"
        return {"name": self.ref, "version": version, "checksum": self.checksum}

    def _pieces(self, batch: TokenBatch, rows: list[int]) -> list[Piece]:
        """Windows of ``rows`` (see window_pieces; a piece's row index is a position in ``rows``)."""
        ids = [batch.ids[batch.span(r)] for r in rows]
        return window_pieces(ids, self.size, self.stride, batch.prefix, batch.suffix)

    @torch.inference_mode()
    def _logits(self, pieces: list[Piece], pad_id: int, stop: Stop | None) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(pieces)
        for index, ids, mask in padded_batches([p.ids for p in pieces], pad_id, self.max_batch_tokens, stop):
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits.cpu()
            for k, i in enumerate(index):
                out[i] = logits[k]  # [classes], or [padded tokens, classes] for token classification
        return out


class TokenClassifier(HFTask):
    """Token labels aggregated into entity spans as the transformers pipeline's ``simple`` strategy:
    adjacent tokens with the same entity type (B-/I- tags) form one entity, scored by their mean."""

    kind = "token-classification"

    def __call__(self, batch: TokenBatch, rows: list[int], stop: Stop | None = None) -> list[list[dict]]:
        pieces = self._pieces(batch, rows)
        logits = self._logits(pieces, batch.pad_id, stop)
        start_of = len(batch.prefix)
        per_row: list[list[torch.Tensor]] = [[] for _ in rows]
        for p, lg in zip(pieces, logits):
            n = len(p.ids) - start_of - len(batch.suffix)
            per_row[p.row].append(lg[start_of + p.owned : start_of + n])
        labels = self.model.config.id2label
        out = []
        for r, token_logits in zip(rows, per_row):  # every row has at least one window
            scores, best = torch.softmax(torch.cat(token_logits), dim=-1).max(-1)
            out.append(self._group(batch, r, [labels[int(k)] for k in best], scores.tolist()))
        return out

    @staticmethod
    def _group(batch: TokenBatch, r: int, tags: list[str], scores: list[float]) -> list[dict]:
        text, offsets = batch.texts[r], batch.offsets[batch.span(r)]
        entities, current = [], None
        for (a, b), tag, score in zip(offsets.tolist(), tags, scores):
            bio, _, kind = tag.partition("-") if tag[:2] in ("B-", "I-") else ("I", "", tag)
            if tag == "O" or (current and (bio == "B" or kind != current["entity_group"])):
                if current:
                    entities.append(current)
                current = None
            if tag == "O":
                continue
            if current is None:
                current = {"entity_group": kind, "scores": [], "start": a}
            current["scores"].append(score)
            current["end"] = b
        if current:
            entities.append(current)
        return [
            {
                "entity_group": e["entity_group"],
                "score": float(np.mean(e["scores"])),
                "word": text[e["start"] : e["end"]],
                "start": e["start"],
                "end": e["end"],
            }
            for e in entities
        ]


class SequenceClassifier(HFTask):
    """One label per text; a text longer than the window gets the mean of its windows' logits."""

    kind = "text-classification"

    def __call__(self, batch: TokenBatch, rows: list[int], stop: Stop | None = None) -> list[dict]:
        pieces = self._pieces(batch, rows)
        logits = self._logits(pieces, batch.pad_id, stop)
        labels = self.model.config.id2label
        out = []
        for i in range(len(rows)):
            mean = torch.stack([lg for p, lg in zip(pieces, logits) if p.row == i]).mean(0)
            probs = torch.softmax(mean, dim=-1)
            k = int(probs.argmax())
            out.append({"label": labels[k], "score": float(probs[k])})
        return out


class Seq2SeqSummarizer(HFTask):
    """Abstractive summaries with ``generate``. Input longer than the model's window is truncated
    to its first ``window`` tokens (as the transformers pipeline does with ``truncation=True``)."""

    kind = "summarization"

    def __init__(
        self, task: str, ref: str, max_length: int = 142, min_length: int = 20, num_beams: int = 4, **kw
    ) -> None:
        super().__init__(task, ref, **kw)
        self.generation = {"max_length": max_length, "min_length": min_length, "num_beams": num_beams}

    def configure(self, settings: SummarySettings) -> None:
        self.generation = {key: getattr(settings, key) for key in self.generation}

    @torch.inference_mode()
    def __call__(self, batch: TokenBatch, rows: list[int], stop: Stop | None = None) -> list[dict]:
        prefix, suffix = np.array(batch.prefix, np.int32), np.array(batch.suffix, np.int32)
        seqs = [np.concatenate([prefix, batch.ids[batch.span(r)][: self.size], suffix]) for r in rows]
        out: list[dict] = [{}] * len(rows)
        for index, ids, mask in padded_batches(seqs, batch.pad_id, self.max_batch_tokens, stop):
            ids, mask = ids.to(self.device), mask.to(self.device)
            generated = self.model.generate(input_ids=ids, attention_mask=mask, **self.generation).cpu()
            for k, text in zip(index, self.tokenizer.batch_decode(generated, skip_special_tokens=True)):
                out[k] = {"summary_text": text.strip(), "sentences": []}
        return out
