"""A Python client for the service: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

    with Client("http://127.0.0.1:8000") as nlp:
        nlp.analyze("Apple hired Tim Cook.", tasks=["ner"])["ner"]

    with Client("127.0.0.1:9000", transport="grpc") as nlp:  # the same answers, over gRPC
        ...

Both build their requests and read the answers with the same code and retry the same way: 408, 429,
5xx, connection errors and timeouts up to ``retries`` times, after the service's ``Retry-After`` or
else 0.5, 1, 2, ... up to 10 s. Any other error answer raises ``ServiceError`` at once, and a success
whose body is not the answer the API describes raises ``UnexpectedAnswer``. Over gRPC each status is
read as its HTTP status (nlpserve.grpc_api.HTTP_STATUS), so the same errors are retried. Only httpx and
tenacity are imported here (grpc once a gRPC client is made), so ``import nlpserve`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

BACKOFF = wait_exponential(multiplier=0.5, max=10)
MAX_RETRY_AFTER_S = 60  # a bigger Retry-After would stall the caller; the service sends 1
TIMEOUT_S = 120.0
RETRIES = 5


class ServiceError(Exception):
    """The service answered with an error status; ``detail`` is its explanation (a string, or FastAPI's list
    of field errors for a 422)."""

    def __init__(self, status: int, detail: Any, retry_after: int | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after

    @property
    def retryable(self) -> bool:
        """Whether sending the same request later may work: overload, a server-side failure, or 408 (Serve's
        answer once its http_options.request_timeout_s has passed)."""
        return self.status in (408, 429) or self.status >= 500


class UnexpectedAnswer(Exception):
    """A success status whose body is not the answer the API describes: not JSON (e.g. a proxy's page), a
    field missing, or not one result per text. Not retried here: whatever answers like that at this URL
    would likely answer the same at once; a caller may try again later."""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ServiceError):
        return error.retryable
    return isinstance(error, httpx.TransportError)


Transport = Literal["http", "grpc"]


def _open(url: str, timeout: float, transport: Transport, application: str | None, asynchronous: bool) -> Any:
    """httpx's client, or the gRPC channel shaped as one (imported only then: it loads grpc and protobuf)."""
    if transport == "http":
        return (httpx.AsyncClient if asynchronous else httpx.Client)(base_url=url, timeout=timeout)
    if transport != "grpc":
        raise ValueError(f"transport must be 'http' or 'grpc', not {transport!r}")
    from nlpserve.grpc_api import AsyncChannel, Channel

    return (AsyncChannel if asynchronous else Channel)(url, timeout, application)


def _wait(state: RetryCallState) -> float:
    """The service's Retry-After (seconds) when it sent one, else exponential backoff."""
    error = state.outcome.exception()  # set: tenacity waits only after an attempt
    if isinstance(error, ServiceError) and error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_AFTER_S)
    return BACKOFF(state)


def _policy(retries: int) -> dict[str, Any]:
    """Arguments of a tenacity Retrying or AsyncRetrying; each call gets its own, which keeps per-call state."""
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, not {retries}")
    return {
        "retry": retry_if_exception(_retryable),
        "stop": stop_after_attempt(retries + 1),
        "wait": _wait,
        "reraise": True,
    }


def _read(response: httpx.Response) -> Any:
    """The JSON answer, or ServiceError with the service's detail (UnexpectedAnswer for a success not in JSON)."""
    if response.is_success:
        try:
            return response.json()
        except ValueError:  # also a body that is not UTF-8
            raise UnexpectedAnswer(f"HTTP {response.status_code}: not JSON: {response.text[:300]}") from None
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):  # not the service's JSON, e.g. a proxy's error page
        detail = response.text[:300]
    after = response.headers.get("Retry-After", "")
    raise ServiceError(response.status_code, detail, int(after) if after.isdecimal() else None)


@dataclass(frozen=True)
class _Call:
    """One API call: what to send, and which field of the answer to return (all of it when None): a JSON
    object, or with ``count`` a list of that many objects (one answer per text of a batch)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    field: str | None = None
    count: int | None = None

    def result(self, response: httpx.Response) -> Any:
        value = _read(response)
        if self.field is not None:
            value = value.get(self.field) if isinstance(value, dict) else None
        if self.count is None:
            ok = isinstance(value, dict)
        else:
            ok = isinstance(value, list) and len(value) == self.count and all(isinstance(x, dict) for x in value)
        if not ok:
            where = "the answer" if self.field is None else f'"{self.field}"'
            expected = "an object" if self.count is None else f"a list of {self.count} objects"
            raise UnexpectedAnswer(f"HTTP {response.status_code}: {where} is not {expected}: {response.text[:300]}")
        return value


def _list(name: str, values: Iterable[str]) -> list[str]:
    if isinstance(values, str):  # a lone string would be sent as its characters
        raise TypeError(f"{name} must be a list of strings, not a string")
    return list(values)


def _options(tasks: Iterable[str] | None, deadline_ms: int | None) -> dict[str, Any]:
    """The options given; left out, the service's defaults apply."""
    options: dict[str, Any] = {}
    if tasks is not None:
        options["tasks"] = _list("tasks", tasks)
    if deadline_ms is not None:
        options["deadline_ms"] = deadline_ms
    return options


def _analyze(text: str, tasks: Iterable[str] | None, deadline_ms: int | None) -> _Call:
    return _Call("POST", "/analyze", {"text": text, **_options(tasks, deadline_ms)})


def _analyze_batch(texts: Iterable[str], tasks: Iterable[str] | None, deadline_ms: int | None) -> _Call:
    body = {"texts": _list("texts", texts), **_options(tasks, deadline_ms)}
    return _Call("POST", "/analyze/batch", body, "results", len(body["texts"]))


_HEALTH = _Call("GET", "/healthz")
_VERSION = _Call("GET", "/version")


class Client:
    """A blocking client of a running service at ``url`` (e.g. ``http://127.0.0.1:8000``); ``timeout`` is in
    seconds per attempt. With ``transport="grpc"``, ``url`` is the gRPC address (``127.0.0.1:9000`` or
    ``grpc://127.0.0.1:9000``) and ``application`` (or the URL's path: ``grpc://127.0.0.1:9000/nlp``) names
    the Serve application where a cluster serves several. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        transport: Transport = "http",
        application: str | None = None,
    ) -> None:
        self._policy = _policy(retries)
        self._transport = _open(url, timeout, transport, application, asynchronous=False)

    def analyze(self, text: str, tasks: Iterable[str] | None = None, deadline_ms: int | None = None) -> dict[str, Any]:
        """The /analyze answer: the tasks asked for (all by default), ``models`` and ``timings``."""
        return self._send(_analyze(text, tasks, deadline_ms))

    def analyze_batch(
        self, texts: Iterable[str], tasks: Iterable[str] | None = None, deadline_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """One /analyze answer per text, in order, from one /analyze/batch request."""
        return self._send(_analyze_batch(texts, tasks, deadline_ms))

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` while the service is up."""
        return self._send(_HEALTH)

    def version(self) -> dict[str, Any]:
        """The service version, its tokenizer groups and each task's model."""
        return self._send(_VERSION)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _send(self, call: _Call) -> Any:
        return Retrying(**self._policy)(self._attempt, call)

    def _attempt(self, call: _Call) -> Any:
        return call.result(self._transport.request(call.method, call.path, json=call.body))


class AsyncClient:
    """``Client`` for asyncio: the same methods and options, awaited; ``async with AsyncClient(url) as nlp:``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = TIMEOUT_S,
        retries: int = RETRIES,
        transport: Transport = "http",
        application: str | None = None,
    ) -> None:
        self._policy = _policy(retries)
        self._transport = _open(url, timeout, transport, application, asynchronous=True)

    async def analyze(
        self, text: str, tasks: Iterable[str] | None = None, deadline_ms: int | None = None
    ) -> dict[str, Any]:
        return await self._send(_analyze(text, tasks, deadline_ms))

    async def analyze_batch(
        self, texts: Iterable[str], tasks: Iterable[str] | None = None, deadline_ms: int | None = None
    ) -> list[dict[str, Any]]:
        return await self._send(_analyze_batch(texts, tasks, deadline_ms))

    async def health(self) -> dict[str, Any]:
        return await self._send(_HEALTH)

    async def version(self) -> dict[str, Any]:
        return await self._send(_VERSION)

    async def close(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _send(self, call: _Call) -> Any:
        return await AsyncRetrying(**self._policy)(self._attempt, call)

    async def _attempt(self, call: _Call) -> Any:
        return call.result(await self._transport.request(call.method, call.path, json=call.body))
