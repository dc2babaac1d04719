"""The task models and the shared encoder: the contracts they keep (TaskModel, EncoderModel), and the
registry that builds one from its settings. Each backend is a module of this package, imported when a
model of it is built, so a replica loads only its own backend (the Encoder no spaCy, NER no transformers
heads)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import torch

from nlpserve.cancel import Stop
from nlpserve.schemas import EncoderSettings, NERSettings, SentimentSettings, SummarySettings, Task, TaskSettings
from nlpserve.tokens import EncodedBatch, TokenBatch, TokenizerSpec


class TaskModel(Protocol):
    """A task's model, as a task replica serves it (deployments/base.py), usable without Ray.

    ``encoder`` is the key of the shared encoder whose token vectors it reads (then ``__call__`` gets
    them, per row, after the rows), or None when it reads tokens only. ``__call__`` answers ``rows``
    of the batch in Hugging Face pipeline shapes, in order, and ends at its next chunk once ``stop``
    is set (raising errors.Cancelled)."""

    encoder: str | None

    @property
    def spec(self) -> TokenizerSpec: ...  # the tokenizer whose tokens it reads

    def info(self) -> dict: ...  # name, version, checksum

    def to(self, device: torch.device) -> torch.device: ...  # moves if it can; where it runs

    def configure(self, settings: Any) -> None: ...  # settings that need no reload

    def __call__(self, batch: TokenBatch, rows: list[int], *vectors: Any, stop: Stop | None = None) -> list: ...


class EncoderModel(Protocol):
    """A shared encoder, as the Encoder deployment serves it: one pass over the rows of several calls,
    token vectors that every head naming its ``key`` reads (see nlpserve.models.encoder)."""

    key: str  # the weights checksum and the tokenizer fingerprint: heads name it to share its passes

    @property
    def spec(self) -> TokenizerSpec: ...  # the tokenizer whose tokens it reads

    def info(self) -> dict: ...  # name, kernel (the forward pass that runs, e.g. "onnx-int8"), key

    def to(self, device: torch.device) -> None: ...

    def encode(self, calls: list[tuple[TokenBatch, list[int]]], stop: Stop | None = None) -> list[EncodedBatch]: ...


def _backend(module: str, name: str) -> Any:
    """The class ``name`` of the backend module ``nlpserve.models.<module>``, imported now."""
    return getattr(importlib.import_module(f"nlpserve.models.{module}"), name)


REGISTRY: dict[tuple[Task, str], Callable[[Any], TaskModel]] = {
    ("ner", "default"): lambda s: _backend("ner", "SpacyNER")(kernel=s.kernel),
    ("ner", "spacy"): lambda s: _backend("ner", "SpacyNER")(s.model, s.kernel),
    ("ner", "transformers"): lambda s: _backend("hf", "TokenClassifier")("ner", s.model, s.window, s.stride),
    ("sentiment", "default"): lambda s: _backend("sentiment", "SentimentModel")(),
    ("sentiment", "transformers"): lambda s: _backend("hf", "SequenceClassifier")(
        "sentiment", s.model, s.window, s.stride
    ),
    ("summary", "default"): lambda s: _backend("summary", "ExtractiveSummarizer")(),
    ("summary", "transformers"): lambda s: _backend("hf", "Seq2SeqSummarizer")("summary", s.model, s.window, s.stride),
}
SETTINGS: dict[Task, type[TaskSettings]] = {
    "ner": NERSettings,
    "sentiment": SentimentSettings,
    "summary": SummarySettings,
}


def build(task: Task, settings: TaskSettings) -> TaskModel:
    """The model ``settings`` name for ``task`` (its backend picks the class), configured."""
    model = REGISTRY[(task, settings.backend)](settings)
    model.configure(settings)
    return model


def model_entry(model: TaskModel, settings: TaskSettings, device: str) -> dict:
    """What an answer's ``models`` names for a task: the model's identity (``info``), where it ran and the
    hash of the settings that shape its answers (a head's replica adds the kernel of the vectors it read)."""
    return {**model.info(), "device": device, "settings": settings.answer_hash}


def build_encoder(settings: EncoderSettings) -> EncoderModel:
    """The shared encoder ``settings`` describe (one today: MiniLM, on the kernel they name)."""
    return _backend("encoder", "MiniLMEncoder")(
        kernel=settings.kernel, threads=settings.torch_threads, window_threads=settings.window_threads
    )
