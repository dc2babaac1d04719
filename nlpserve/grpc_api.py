"""The gRPC API (nlpserve/protos/analyze.proto) as the HTTP API's JSON: requests into the JSON bodies
the HTTP routes validate, the JSON answers into messages and back, and each HTTP error status as a
gRPC status. The ingress serves both protocols through one code path with it; the clients read gRPC
answers back into the same JSON. Imported only where gRPC is used."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
from google.protobuf import json_format

from nlpserve.protos import analyze_pb2 as pb
from nlpserve.protos import analyze_pb2_grpc as rpc

# A task's field in AnalyzeResponse holds a oneof: its answer under this name, or "error".
ANSWER = {"ner": "entities", "sentiment": "label", "summary": "summary"}
# The gRPC status of each HTTP error status the ingress's routes raise: a limit, a field error.
STATUS = {413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT}


def analyze_body(request: pb.AnalyzeRequest) -> dict:
    """The JSON body of POST /analyze that says the same; unset fields are left to the API's defaults."""
    body: dict[str, Any] = {"text": request.text}
    return _options(body, request)


def batch_body(request: pb.AnalyzeBatchRequest) -> dict:
    """The JSON body of POST /analyze/batch that says the same."""
    return _options({"texts": list(request.texts)}, request)


def _options(body: dict, request: pb.AnalyzeRequest | pb.AnalyzeBatchRequest) -> dict:
    if request.tasks:
        body["tasks"] = list(request.tasks)
    if request.HasField("deadline_ms"):
        body["deadline_ms"] = request.deadline_ms
    return body


def analyze_request(body: dict) -> pb.AnalyzeRequest:
    return json_format.ParseDict(body, pb.AnalyzeRequest())


def batch_request(body: dict) -> pb.AnalyzeBatchRequest:
    return json_format.ParseDict(body, pb.AnalyzeBatchRequest())


def _task(task: str, answer: Any) -> dict:
    if isinstance(answer, dict) and "error" in answer:
        return {"error": answer}
    return {ANSWER[task]: {"entities": answer} if task == "ner" else answer}


def response(answer: dict) -> pb.AnalyzeResponse:
    """An /analyze answer (its JSON) as an AnalyzeResponse."""
    shaped = {key: _task(key, value) if key in ANSWER else value for key, value in answer.items()}
    return json_format.ParseDict(shaped, pb.AnalyzeResponse())


def batch_response(answers: list[dict]) -> pb.AnalyzeBatchResponse:
    return pb.AnalyzeBatchResponse(results=[response(a) for a in answers])


def _json(message: Any) -> dict:
    # Zeros and empty lists too (an entity at offset 0, a summary with no sentences), as the JSON has them.
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def answer(message: pb.AnalyzeResponse) -> dict:
    """An AnalyzeResponse as the /analyze answer's JSON: the tasks it holds, ``models`` and ``timings``."""
    raw = _json(message)
    out: dict[str, Any] = {}
    for task, name in ANSWER.items():
        if message.HasField(task):
            held = raw[task]
            if "error" in held:
                out[task] = held["error"]
            else:
                out[task] = held[name]["entities"] if task == "ner" else held[name]
    return {**out, "models": raw["models"], "timings": raw["timings"]}


def version_response(version: dict) -> pb.VersionResponse:
    """GET /version's JSON as a VersionResponse."""
    tasks = {t: {"error": info} if "error" in info else {"model": info} for t, info in version["tasks"].items()}
    return json_format.ParseDict({**version, "tasks": tasks}, pb.VersionResponse(), ignore_unknown_fields=True)


def version(message: pb.VersionResponse) -> dict:
    raw = _json(message)
    return {**raw, "tasks": {t: next(iter(info.values())) for t, info in raw["tasks"].items()}}


def health_response(missing: dict[str, str]) -> pb.HealthResponse:
    """GET /readyz as a HealthResponse: SERVING, or NOT_SERVING and what is missing."""
    status = pb.HealthResponse.NOT_SERVING if missing else pb.HealthResponse.SERVING
    return pb.HealthResponse(status=status, missing=[f"{name}: {why}" for name, why in missing.items()])


# Each gRPC status as the HTTP status the clients read (nlpserve.client retries 408, 429 and 5xx).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,  # also no connection
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,  # the call's timeout
    grpc.StatusCode.NOT_FOUND: 404,  # no such application
    grpc.StatusCode.UNIMPLEMENTED: 404,
}
# Serve's own refusal of a call beyond the ingress's max_ongoing_requests: RESOURCE_EXHAUSTED like a
# limit, but overload, to be retried as HTTP's 503.
BACKPRESSURE = "Request dropped due to backpressure"
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a batch's answers may pass gRPC's usual 4 MB


def _status(error: grpc.RpcError) -> tuple[int, Any]:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(BACKPRESSURE):
        return 503, details
    status = HTTP_STATUS.get(code, 500)
    if status == 422:
        try:
            return status, json.loads(details)  # the field errors, as the 422's detail
        except ValueError:
            pass
    return status, details


class Channel:
    """The gRPC transport of nlpserve.Client: ``request`` takes the HTTP call the client would make and
    answers with the httpx.Response that HTTP would have given, so the client's checks and retries are
    the same for both protocols."""

    def __init__(self, url: str, timeout: float, application: str | None) -> None:
        # grpc://host:port/app: the path names the Serve application, as an HTTP URL's path its route.
        target, _, path = url.removeprefix("grpc://").partition("/")
        application = application or path.strip("/") or None
        self.channel = self._open(target, [("grpc.max_receive_message_length", MAX_ANSWER_BYTES)])
        self.stub = rpc.AnalyzerStub(self.channel)
        self.timeout = timeout
        self.metadata = [("application", application)] if application else None

    def _rpc(self, path: str, body: dict | None) -> tuple[Any, Any, Any]:
        """The stub method, its request and how to read its answer, for the HTTP call to ``path``."""
        if path == "/analyze":
            return self.stub.Analyze, analyze_request(body or {}), answer
        if path == "/analyze/batch":
            return (
                self.stub.AnalyzeBatch,
                batch_request(body or {}),
                lambda m: {"results": [answer(r) for r in m.results]},
            )
        if path == "/version":
            return self.stub.Version, pb.VersionRequest(), version
        if path == "/healthz":
            return self.stub.Health, pb.HealthRequest(), health
        raise ValueError(f"no RPC for {path}")

    def _response(self, read: Any, message: Any = None, error: grpc.RpcError | None = None) -> httpx.Response:
        if error is None:
            return httpx.Response(200, json=read(message))
        status, detail = _status(error)
        return httpx.Response(status, json={"detail": detail})

    def request(self, method: str, path: str, json: dict | None = None) -> httpx.Response:
        call, message, read = self._rpc(path, json)
        try:
            return self._response(read, call(message, timeout=self.timeout, metadata=self.metadata))
        except grpc.RpcError as e:
            return self._response(read, error=e)

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def _open(target: str, options: list) -> Any:
        return grpc.insecure_channel(target, options=options)


class AsyncChannel(Channel):
    """Channel for nlpserve.AsyncClient: the same calls, awaited."""

    async def request(self, method: str, path: str, json: dict | None = None) -> httpx.Response:
        call, message, read = self._rpc(path, json)
        try:
            return self._response(read, await call(message, timeout=self.timeout, metadata=self.metadata))
        except grpc.RpcError as e:
            return self._response(read, error=e)

    async def aclose(self) -> None:
        await self.channel.close()

    @staticmethod
    def _open(target: str, options: list) -> Any:
        return grpc.aio.insecure_channel(target, options=options)


def health(message: pb.HealthResponse) -> dict:
    """The Health RPC's answer as nlpserve.Client.health gives it: {"status": "ok"} once SERVING."""
    if message.status == pb.HealthResponse.SERVING:
        return {"status": "ok"}
    return {"status": "not ready", "missing": list(message.missing)}
