"""HTTP API and Serve config schemas (pydantic), in Hugging Face pipeline output shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal["ner", "sentiment", "summary"]
TASKS: tuple[Task, ...] = ("ner", "sentiment", "summary")


def _dedupe(tasks: list[Task]) -> list[Task]:
    return list(dict.fromkeys(tasks))


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must contain something other than white space")
    return text


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="The text to analyze.")
    tasks: list[Task] = Field(default=list(TASKS), min_length=1, description="Tasks to run; all by default.")

    _text = field_validator("text")(_not_blank)
    _tasks = field_validator("tasks")(_dedupe)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="Texts to analyze, each like `text` of /analyze.")
    tasks: list[Task] = Field(default=list(TASKS), min_length=1)

    @field_validator("texts")
    @classmethod
    def _texts(cls, texts: list[str]) -> list[str]:
        for i, t in enumerate(texts):
            try:
                _not_blank(t)
            except ValueError as e:
                raise ValueError(f"texts[{i}]: {e}") from None
        return texts

    _tasks = field_validator("tasks")(_dedupe)


class Entity(BaseModel):
    entity_group: str
    score: float
    word: str
    start: int
    end: int


class Sentiment(BaseModel):
    label: str
    score: float


class Span(BaseModel):
    start: int
    end: int


class Summary(BaseModel):
    summary_text: str
    sentences: list[Span] = Field(description="Character offsets of the picked sentences in the input.")


class TaskError(BaseModel):
    error: str


class AnalyzeResponse(BaseModel):
    ner: list[Entity] | TaskError | None = None
    sentiment: Sentiment | TaskError | None = None
    summary: Summary | TaskError | None = None


class BatchResponse(BaseModel):
    results: list[AnalyzeResponse]


class ModelInfo(BaseModel):
    name: str
    version: str
    checksum: str


class VersionResponse(BaseModel):
    service: str
    tokenizer: ModelInfo
    tasks: dict[str, ModelInfo | TaskError]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngressSettings(_Settings):
    """`user_config` of the Ingress deployment."""

    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.005, ge=0)
    task_timeout_s: float = Field(30.0, gt=0)
    max_text_chars: int = Field(100_000, ge=1)
    max_batch_items: int = Field(64, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)


class TaskSettings(_Settings):
    torch_threads: int = Field(1, ge=1)


class NERSettings(TaskSettings):
    pass


class SentimentSettings(TaskSettings):
    pass


class SummarySettings(TaskSettings):
    ratio: float = Field(0.3, gt=0, le=1)
    max_sentences: int = Field(3, ge=1)
    max_chars: int = Field(800, ge=20)
    redundancy: float = Field(0.5, ge=0)
