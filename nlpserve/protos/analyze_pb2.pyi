from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnalyzeRequest(_message.Message):
    __slots__ = ("text", "tasks", "deadline_ms")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    deadline_ms: int
    def __init__(self, text: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class AnalyzeBatchRequest(_message.Message):
    __slots__ = ("texts", "tasks", "deadline_ms")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    deadline_ms: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[str]] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("entity_group", "score", "word", "start", "end")
    ENTITY_GROUP_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WORD_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    entity_group: str
    score: float
    word: str
    start: int
    end: int
    def __init__(self, entity_group: _Optional[str] = ..., score: _Optional[float] = ..., word: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Entities(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ...) -> None: ...

class Label(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class CharSpan(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class SummaryText(_message.Message):
    __slots__ = ("summary_text", "sentences")
    SUMMARY_TEXT_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    summary_text: str
    sentences: _containers.RepeatedCompositeFieldContainer[CharSpan]
    def __init__(self, summary_text: _Optional[str] = ..., sentences: _Optional[_Iterable[_Union[CharSpan, _Mapping]]] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("error", "code")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    error: str
    code: str
    def __init__(self, error: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class NerAnswer(_message.Message):
    __slots__ = ("entities", "error")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    entities: Entities
    error: TaskError
    def __init__(self, entities: _Optional[_Union[Entities, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class SentimentAnswer(_message.Message):
    __slots__ = ("label", "error")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    label: Label
    error: TaskError
    def __init__(self, label: _Optional[_Union[Label, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class SummaryAnswer(_message.Message):
    __slots__ = ("summary", "error")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    summary: SummaryText
    error: TaskError
    def __init__(self, summary: _Optional[_Union[SummaryText, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "checksum", "device", "settings", "encoder")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    checksum: str
    device: str
    settings: str
    encoder: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., checksum: _Optional[str] = ..., device: _Optional[str] = ..., settings: _Optional[str] = ..., encoder: _Optional[str] = ...) -> None: ...

class TaskTiming(_message.Message):
    __slots__ = ("call_ms", "wait_ms", "texts", "to_replica_ms", "get_ms", "compute_ms", "replica_ms", "encode_ms", "encode_texts")
    CALL_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TO_REPLICA_MS_FIELD_NUMBER: _ClassVar[int]
    GET_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_TEXTS_FIELD_NUMBER: _ClassVar[int]
    call_ms: float
    wait_ms: float
    texts: int
    to_replica_ms: float
    get_ms: float
    compute_ms: float
    replica_ms: float
    encode_ms: float
    encode_texts: int
    def __init__(self, call_ms: _Optional[float] = ..., wait_ms: _Optional[float] = ..., texts: _Optional[int] = ..., to_replica_ms: _Optional[float] = ..., get_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., replica_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., encode_texts: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("batch_size", "queue_ms", "groups", "tokenize_ms", "tokenized_texts", "put_ms", "ingress_ms", "tasks", "cached")
    class TasksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskTiming
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskTiming, _Mapping]] = ...) -> None: ...
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZED_TEXTS_FIELD_NUMBER: _ClassVar[int]
    PUT_MS_FIELD_NUMBER: _ClassVar[int]
    INGRESS_MS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    queue_ms: float
    groups: int
    tokenize_ms: float
    tokenized_texts: int
    put_ms: float
    ingress_ms: float
    tasks: _containers.MessageMap[str, TaskTiming]
    cached: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch_size: _Optional[int] = ..., queue_ms: _Optional[float] = ..., groups: _Optional[int] = ..., tokenize_ms: _Optional[float] = ..., tokenized_texts: _Optional[int] = ..., put_ms: _Optional[float] = ..., ingress_ms: _Optional[float] = ..., tasks: _Optional[_Mapping[str, TaskTiming]] = ..., cached: _Optional[_Iterable[str]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("ner", "sentiment", "summary", "models", "timings")
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ModelInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...
    NER_FIELD_NUMBER: _ClassVar[int]
    SENTIMENT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    ner: NerAnswer
    sentiment: SentimentAnswer
    summary: SummaryAnswer
    models: _containers.MessageMap[str, ModelInfo]
    timings: Timings
    def __init__(self, ner: _Optional[_Union[NerAnswer, _Mapping]] = ..., sentiment: _Optional[_Union[SentimentAnswer, _Mapping]] = ..., summary: _Optional[_Union[SummaryAnswer, _Mapping]] = ..., models: _Optional[_Mapping[str, ModelInfo]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class AnalyzeBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AnalyzeResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[AnalyzeResponse, _Mapping]]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TokenizerGroup(_message.Message):
    __slots__ = ("fingerprint", "name", "tasks")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    name: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, fingerprint: _Optional[str] = ..., name: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("model", "error")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    error: TaskError
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("service", "tokenizer_groups", "tasks")
    class TasksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TaskInfo
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[TaskInfo, _Mapping]] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_GROUPS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    service: str
    tokenizer_groups: _containers.RepeatedCompositeFieldContainer[TokenizerGroup]
    tasks: _containers.MessageMap[str, TaskInfo]
    def __init__(self, service: _Optional[str] = ..., tokenizer_groups: _Optional[_Iterable[_Union[TokenizerGroup, _Mapping]]] = ..., tasks: _Optional[_Mapping[str, TaskInfo]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "missing")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[HealthResponse.Status]
        SERVING: _ClassVar[HealthResponse.Status]
        NOT_SERVING: _ClassVar[HealthResponse.Status]
    UNKNOWN: HealthResponse.Status
    SERVING: HealthResponse.Status
    NOT_SERVING: HealthResponse.Status
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    status: HealthResponse.Status
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, status: _Optional[_Union[HealthResponse.Status, str]] = ..., missing: _Optional[_Iterable[str]] = ...) -> None: ...
