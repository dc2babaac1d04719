"""HTTP API and Serve config schemas (pydantic), in Hugging Face pipeline output shapes."""

from __future__ import annotations

import hashlib
import re
from enum import Enum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["ner", "sentiment", "summary"]
TASKS: tuple[Task, ...] = ("ner", "sentiment", "summary")
# The forward passes of the shared encoder (nlpserve.models.kernels) and the NER's parses (nlpserve.models.ner).
EncoderKernel = Literal["torch", "torch-int8", "onnx", "onnx-int8"]
DEFAULT_ENCODER_KERNEL: EncoderKernel = "onnx-int8"  # the fastest here; the sentiment head is trained on it
NERKernel = Literal["native", "stepwise"]


# Documents in the OpenAPI spec what the validators below check (a text must not be blank).
NOT_BLANK = {"minLength": 1, "pattern": r"\S"}


DEADLINE = Field(
    None,
    ge=1,
    le=600_000,
    description="Answer after this many ms with the tasks done by then; the others get code `deadline_exceeded`.",
)


def _dedupe(tasks: list[Task]) -> list[Task]:
    return list(dict.fromkeys(tasks))


def _not_bool(value: object) -> object:
    if isinstance(value, bool):  # JSON true is not 1 ms; 1500.0 still is 1500
        raise ValueError("deadline_ms must be an integer, not a boolean")
    return value


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("text must contain something other than white space")
    return text


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="The text to analyze.", json_schema_extra=NOT_BLANK)
    tasks: list[Task] = Field(default=list(TASKS), min_length=1, description="Tasks to run; all by default.")

    deadline_ms: int | None = DEADLINE

    _deadline = field_validator("deadline_ms", mode="before")(_not_bool)
    _text = field_validator("text")(_not_blank)
    _tasks = field_validator("tasks")(_dedupe)


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Annotated[str, Field(json_schema_extra=NOT_BLANK)]] = Field(
        min_length=1, description="Texts to analyze, each like `text` of /analyze."
    )
    tasks: list[Task] = Field(default=list(TASKS), min_length=1)
    deadline_ms: int | None = DEADLINE

    _deadline = field_validator("deadline_ms", mode="before")(_not_bool)

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


class Label(BaseModel):
    """A text-classification answer, as Hugging Face's pipeline gives it: the label and its score."""

    label: str
    score: float


class CharSpan(BaseModel):
    """Code-point offsets into the text: ``text[start:end]``."""

    start: int
    end: int


class SummaryText(BaseModel):
    summary_text: str
    sentences: list[CharSpan] = Field(
        [], description="Character offsets of the picked input sentences (extractive summaries only)."
    )


class ErrorCode(str, Enum):
    """Why a task did not answer (README, API; docs/api.md)."""

    failed = "failed"  # the task raised
    timeout = "timeout"  # over its task timeout
    deadline_exceeded = "deadline_exceeded"  # not done by the request's deadline_ms
    unavailable = "unavailable"  # its tokenizer or encoder could not be learned


class TaskError(BaseModel):
    """A task's answer when it did not answer; the other tasks of the request answer as usual."""

    model_config = ConfigDict(frozen=True)

    error: str
    code: ErrorCode = Field(
        description="failed: the task raised; timeout: over its task timeout; deadline_exceeded: not done by the "
        "request's deadline_ms; unavailable: its tokenizer or encoder could not be learned."
    )


class ModelInfo(BaseModel):
    name: str
    version: str
    checksum: str
    device: str | None = Field(None, description="Where the replica runs the model: cpu or cuda:0.")
    settings: str | None = Field(None, description="Hash of the task settings that shape its answers.")
    encoder: str | None = Field(None, description="Kernel of the shared encoder whose vectors this head read.")


class TaskTiming(BaseModel):
    call_ms: float = Field(description="From the batch's queueing of the task to its answer, seen from the ingress.")
    wait_ms: float | None = Field(None, description="Waiting in the ingress for the deployment's next call.")
    texts: int | None = Field(None, description="Texts in the remote call that answered (several batches' rows).")
    to_replica_ms: float | None = Field(None, description="From sending the call to the replica beginning it.")
    get_ms: float | None = Field(None, description="Reading the TokenBatches from the object store.")
    compute_ms: float | None = Field(None, description="The model on the whole call.")
    replica_ms: float | None = Field(None, description="The whole call inside the replica.")
    encode_ms: float | None = Field(None, description="The shared encoder's pass this head read (heads only).")
    encode_texts: int | None = Field(None, description="Texts in that encoder pass (heads only).")


class Timings(BaseModel):
    batch_size: int = Field(description="Texts in the batch this text was tokenized with.")
    queue_ms: float = Field(description="Waiting for the batch to start (batch wait and queue).")
    groups: int = Field(1, description="Tokenizer groups the batch was tokenized for (once each).")
    tokenize_ms: float
    tokenized_texts: int = Field(0, description="Texts of the batch that were tokenized (not in the token cache).")
    put_ms: float = Field(description="ray.put of the batch's TokenBatch.")
    ingress_ms: float = Field(0.0, description="Everything inside the ingress for this request.")
    tasks: dict[str, TaskTiming]
    cached: list[str] = Field([], description="Tasks answered from the result cache.")


class AnalyzeResponse(BaseModel):
    ner: list[Entity] | TaskError | None = None
    sentiment: Label | TaskError | None = None
    summary: SummaryText | TaskError | None = None
    models: dict[str, ModelInfo] = Field({}, description="The model that answered each task.")
    timings: Timings | None = None


class BatchResponse(BaseModel):
    results: list[AnalyzeResponse]


class TokenizerGroup(BaseModel):
    fingerprint: str
    name: str = Field(description="The tokenizer's source (model reference) of the group's first task.")
    tasks: list[str] = Field(description="Tasks that share this tokenization.")


class VersionResponse(BaseModel):
    service: str
    tokenizer_groups: list[TokenizerGroup]
    tasks: dict[str, ModelInfo | TaskError]


def field_errors(errors: list) -> list[dict]:
    """A 422's detail: each of pydantic's field errors by its type, place (``loc``) and message."""
    return [{k: e[k] for k in ("type", "loc", "msg") if k in e} for e in errors]


class ErrorResponse(BaseModel):
    detail: str


ERRORS: dict[int | str, dict] = {
    400: {
        "model": ErrorResponse,
        "description": "Malformed JSON, invalid UTF-8, a bad Content-Length, or a Host not in allowed_hosts.",
    },
    403: {"model": ErrorResponse, "description": "A cross-site browser request from an origin not in cors_origins."},
    413: {"model": ErrorResponse, "description": "Body, text or batch over its configured limit."},
    503: {"description": "Overloaded: the request queue is full; retry after `Retry-After` seconds."},
}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngressSettings(_Settings):
    """`user_config` of the Ingress deployment."""

    max_batch_size: int = Field(
        32,
        ge=1,
        description="Requests per ingress batch, and texts per call of a deployment (a bigger batch goes alone).",
    )
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="Added wait for a batch to fill; none by default: batches grow while the graph is busy."
    )
    together_s: float = Field(
        0.25,
        ge=0,
        description="A batch goes to its deployments together, so NER and the Encoder take the same batches: one "
        "that is free waits up to this long for the others to be free too; 0: each takes work as soon as it can.",
    )
    task_timeout_s: float = Field(30.0, gt=0)
    task_timeouts_s: dict[Task, float] = Field({}, description="Per-task timeouts over task_timeout_s.")
    max_calls_in_flight: int = Field(
        1,
        ge=1,
        description="Calls in flight per deployment (Encoder, NER, ...): more work waits for the next call. With "
        "autoscaling, at least max_replicas x target_ongoing_requests, so the autoscaler sees the load.",
    )
    slow_call_s: float = Field(
        2.0,
        gt=0,
        description="A call still running after this long (a long text) no longer holds its deployment's slot: one "
        "more call may go, so the requests behind it are not held up. Well above a full batch's call.",
    )
    max_text_chars: int = Field(100_000, ge=1)
    max_request_chars: int = Field(
        200_000,
        ge=1,
        description="Requests whose texts add up to more characters get 413 before any is tokenized (ordinary "
        "text is about 4 characters a token: this leaves room for max_request_tokens).",
    )
    max_text_tokens: int = Field(
        16_384, ge=1, description="Longer texts (tokens of their tokenizer group) get 413; bounds their sentences too."
    )
    max_request_tokens: int = Field(16_384, ge=1, description="Requests whose texts add up to more tokens get 413.")
    max_batch_items: int = Field(64, ge=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1)
    token_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Bytes of tokenized texts kept (text and arrays); 0 turns the cache off."
    )
    token_cache_ttl_s: float = Field(300.0, gt=0)
    result_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Bytes of answers kept (their texts and JSON); 0 turns the cache off."
    )
    result_cache_ttl_s: float = Field(300.0, gt=0)
    allowed_hosts: list[str] = Field(
        ["127.0.0.1", "localhost", "[::1]"],
        description="Host names (any port) requests may be sent to, against DNS rebinding; `*`: any, for behind a "
        "proxy that checks them.",
    )
    cors_origins: list[str] = Field(
        [], description="Other sites (`https://host[:port]`) whose pages may call the API (CORS); `*`: every site."
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        for h in hosts:
            if not re.fullmatch(r"\*|[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]", h):
                raise ValueError(f"{h!r} is not a host name like 'nlp.example.com' or '[::1]' (no scheme, no port)")
        return [h.lower() for h in hosts]

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for o in origins:
            if not re.fullmatch(r"\*|https?://[^/?#\s]+", o, re.IGNORECASE):
                raise ValueError(f"{o!r} is not an origin like 'https://app.example:8443' (no path, no trailing /)")
        return [o.lower() for o in origins]


class TaskSettings(_Settings):
    """`user_config` of a task deployment: which model, and how to run it."""

    torch_threads: int = Field(1, ge=1)
    backend: Literal["default", "transformers"] = Field(
        "default", description="`default`: the offline pack; `transformers`: `model` from the hub or a directory."
    )
    model: str | None = Field(None, description="Hub id or local directory (safetensors weights, fast tokenizer).")
    window: int | None = Field(None, ge=8, description="Tokens per model call (transformers); default: the model's.")
    stride: int = Field(32, ge=0, description="Tokens shared by consecutive windows of a long text.")

    # Settings only some backends read: given for another backend they are refused, never ignored.
    only_for: ClassVar[dict[str, tuple[str, ...]]] = {"window": ("transformers",), "stride": ("transformers",)}

    @model_validator(mode="after")
    def _model_matches_backend(self) -> TaskSettings:
        if (self.backend == "default") != (self.model is None):
            raise ValueError(f"backend {self.backend!r} " + ("takes no model" if self.model else "needs a model"))
        for name in sorted(self.model_fields_set):
            backends = self.only_for.get(name, (self.backend,))
            if self.backend not in backends:
                raise ValueError(f"{name} applies to backend {' or '.join(backends)}, not to {self.backend}")
        return self

    @property
    def load_key(self) -> tuple:
        """What a new model must be loaded for when it changes."""
        return self.backend, self.model, self.window, self.stride

    @property
    def answer_hash(self) -> str:
        """A hash of every setting that can change an answer (all but the thread count): the result
        cache keys on it, so a reconfigured task is never answered from before."""
        shaping = self.model_dump_json(exclude={"torch_threads"})
        return hashlib.sha256(f"{type(self).__name__}:{shaping}".encode()).hexdigest()[:16]


class NERSettings(TaskSettings):
    backend: Literal["default", "transformers", "spacy"] = Field(
        "default", description="`spacy`: a spaCy pipeline (`model`: package name or directory) on the shared words."
    )
    kernel: NERKernel = Field(
        "native", description="spaCy's parse: its compiled loop, or step by step in Python (the reference)."
    )
    only_for: ClassVar[dict[str, tuple[str, ...]]] = {**TaskSettings.only_for, "kernel": ("default", "spacy")}

    @property
    def load_key(self) -> tuple:
        return (*super().load_key, self.kernel)


class EncoderSettings(_Settings):
    """`user_config` of the Encoder deployment: the shared MiniLM encoder."""

    torch_threads: int = Field(
        2,
        ge=1,
        description="Threads of the forward pass: torch's, or ONNX Runtime windows side by side.",
    )
    window_threads: int = Field(
        1, ge=1, description="ONNX Runtime threads of one window (intra-op); 1: each window on one thread."
    )
    kernel: EncoderKernel = Field(
        DEFAULT_ENCODER_KERNEL, description="The forward pass: eager torch or ONNX Runtime, float32 or dynamic int8."
    )
    max_batch_size: int = Field(
        16, ge=1, description="Calls joined into one encoder pass (Serve batching); at most max_ongoing_requests."
    )

    @property
    def load_key(self) -> tuple:
        """What a new encoder must be loaded for when it changes (as TaskSettings.load_key)."""
        return self.kernel, self.torch_threads, self.window_threads


class SentimentSettings(TaskSettings):
    pass


class SummarySettings(TaskSettings):
    ratio: float = Field(0.3, gt=0, le=1)
    max_sentences: int = Field(3, ge=1)
    max_chars: int = Field(800, ge=20)
    redundancy: float = Field(0.5, ge=0)
    lead_prior: float = Field(
        0.08, ge=0, description="Bonus lead_prior / (i + 1) for the i-th sentence (from 0): news puts its point first."
    )
    max_length: int = Field(142, ge=1, description="Longest generated summary, in tokens (transformers).")
    min_length: int = Field(20, ge=0, description="Shortest generated summary, in tokens (transformers).")
    num_beams: int = Field(4, ge=1, description="Beam search width (transformers).")
    only_for: ClassVar[dict[str, tuple[str, ...]]] = {
        **TaskSettings.only_for,
        **dict.fromkeys(("ratio", "max_sentences", "max_chars", "redundancy", "lead_prior"), ("default",)),
        **dict.fromkeys(("max_length", "min_length", "num_beams"), ("transformers",)),
    }
