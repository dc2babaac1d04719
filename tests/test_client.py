"""nlpserve.Client and AsyncClient against the CLI tests' fake service (an http.server in a thread), so no Ray."""

import asyncio
import subprocess
import sys
import time

import httpx
import pytest
from test_cli import FakeService, all_ok, answer

from nlpserve import AsyncClient, Client, ServiceError
from nlpserve.client import UnexpectedAnswer
from nlpserve.schemas import TASKS

ALL = list(TASKS)


@pytest.fixture
def service():
    with FakeService() as fake:
        yield fake


def overloaded_first(times: int, retry_after: str):
    """A service that answers 503 with ``retry_after`` to its first ``times`` requests, then all_ok."""

    def respond(path: str, body: dict) -> tuple[int, dict, dict]:
        state["seen"] += 1
        if state["seen"] <= times:
            return 503, {"Retry-After": retry_after}, {"detail": "overloaded"}
        return all_ok(path, body)

    state = {"seen": 0}
    return respond


def test_the_package_exports_the_clients_without_loading_ray_or_torch():
    code = "import sys; from nlpserve import AsyncClient, Client; print(sorted({'ray', 'torch'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_analyze_returns_the_answer(service):
    with Client(service.url) as nlp:
        assert nlp.analyze("Apple hired Tim Cook.") == answer("Apple hired Tim Cook.", ALL)
    assert [(r.method, r.path) for r in service.requests] == [("POST", "/analyze")]


def test_analyze_batch_returns_the_results_in_order(service):
    with Client(service.url) as nlp:
        results = nlp.analyze_batch(["first", "second", "third"], tasks=["summary"])
    assert [r["summary"]["summary_text"] for r in results] == ["first", "second", "third"]
    assert results[0] == answer("first", ["summary"])
    assert [r.path for r in service.requests] == ["/analyze/batch"]


def test_tasks_and_deadline_are_sent_only_when_given(service):
    with Client(service.url) as nlp:
        nlp.analyze("a")
        nlp.analyze("b", tasks=("ner", "sentiment"), deadline_ms=500)
        nlp.analyze_batch(iter(["c"]))
        nlp.analyze_batch(["d"], tasks=["ner"], deadline_ms=0)  # 0 is given: the service will refuse it, not us
    assert [r.body for r in service.requests] == [
        {"text": "a"},
        {"text": "b", "tasks": ["ner", "sentiment"], "deadline_ms": 500},
        {"texts": ["c"]},
        {"texts": ["d"], "tasks": ["ner"], "deadline_ms": 0},
    ]


def test_a_lone_string_for_a_list_is_refused_before_sending(service):
    with Client(service.url) as nlp:
        with pytest.raises(TypeError, match="texts"):
            nlp.analyze_batch("one text")
        with pytest.raises(TypeError, match="tasks"):
            nlp.analyze("a text", tasks="ner")
    assert service.requests == []


def test_a_503_is_retried_after_its_retry_after(service):
    service.respond = overloaded_first(1, "1")
    with Client(service.url) as nlp:
        assert nlp.analyze("busy") == answer("busy", ALL)
    first, second = (r.at for r in service.requests)
    assert second - first >= 0.95  # the service's 1 s, not the first backoff step (0.5 s)


@pytest.mark.parametrize("status", [408, 429, 500, 503])  # 408: Serve's request_timeout_s passed
def test_retries_are_bounded_and_then_the_error_is_raised(service, status):
    service.respond = lambda path, body: (status, {"Retry-After": "0"}, {"detail": "try later"})
    with Client(service.url, retries=2) as nlp, pytest.raises(ServiceError) as raised:
        nlp.analyze("busy")
    assert len(service.requests) == 3  # the first try and 2 retries
    assert (raised.value.status, raised.value.detail, raised.value.retry_after) == (status, "try later", 0)
    assert raised.value.retryable


@pytest.mark.parametrize(
    "status, detail",
    [
        (413, "a text is over max_text_chars (100000)"),
        (422, [{"type": "missing", "loc": ["body", "text"], "msg": "Field required"}]),
        (400, "There was an error parsing the body"),
    ],
)
def test_a_refused_request_raises_the_service_detail_without_retrying(service, status, detail):
    service.respond = lambda path, body: (status, {}, {"detail": detail})
    with Client(service.url) as nlp, pytest.raises(ServiceError) as raised:
        nlp.analyze("refused")
    assert (raised.value.status, raised.value.detail) == (status, detail)
    assert str(raised.value) == f"HTTP {status}: {detail}"
    assert not raised.value.retryable
    assert len(service.requests) == 1


@pytest.mark.parametrize(
    "body, why",
    [
        (b"<html>Welcome to the proxy</html>", "HTTP 200: not JSON: <html>Welcome to the proxy</html>"),
        (b"\xff\xfe", "HTTP 200: not JSON: "),
        (b'{"detail": "no results"}', '"results" is not a list of 2 objects'),
        (b'{"results": [{}]}', '"results" is not a list of 2 objects'),
        (b'{"results": [{}, "two"]}', '"results" is not a list of 2 objects'),
        (b"[{}, {}]", '"results" is not a list of 2 objects'),
    ],
)
def test_an_unexpected_batch_answer_raises_without_retrying(service, body, why):
    service.respond = lambda path, request: (200, {}, body)
    with Client(service.url) as nlp, pytest.raises(UnexpectedAnswer, match=why):
        nlp.analyze_batch(["one", "two"])
    assert len(service.requests) == 1


def test_an_answer_that_is_not_an_object_raises(service):
    service.respond = lambda path, request: (200, {}, [])
    with Client(service.url) as nlp, pytest.raises(UnexpectedAnswer, match="the answer is not an object"):
        nlp.analyze("one")


def test_a_timeout_is_retried_and_then_raised(service):
    service.respond = lambda path, body: None
    with Client(service.url, timeout=0.2, retries=1) as nlp, pytest.raises(httpx.ReadTimeout):
        nlp.analyze("slow")
    assert len(service.requests) == 2


def test_health_and_version_get_their_paths(service):
    version = {"service": "0.1.0", "tokenizer_groups": [], "tasks": {}}
    service.respond = lambda path, body: (200, {}, {"/healthz": {"status": "ok"}, "/version": version}[path])
    with Client(service.url) as nlp:
        assert nlp.health() == {"status": "ok"}
        assert nlp.version() == version
    assert [(r.method, r.path) for r in service.requests] == [("GET", "/healthz"), ("GET", "/version")]


def test_a_url_with_a_path_prefix_and_a_trailing_slash(service):
    service.respond = lambda path, body: all_ok(path.removeprefix("/nlp"), body)  # behind a proxy at /nlp
    with Client(service.url + "/nlp/") as nlp:
        assert nlp.analyze("a") == answer("a", ALL)
    assert [r.path for r in service.requests] == ["/nlp/analyze"]


def test_leaving_the_with_block_closes_the_client(service):
    with Client(service.url) as nlp:
        nlp.health()
    with pytest.raises(RuntimeError, match="closed"):
        nlp.health()
    nlp = Client(service.url)
    nlp.close()
    with pytest.raises(RuntimeError, match="closed"):
        nlp.health()


def test_async_client_analyzes_retries_and_raises_like_the_blocking_one(service):
    async def calls() -> tuple[dict, list[dict], ServiceError]:
        async with AsyncClient(service.url) as nlp:
            one = await nlp.analyze("a", deadline_ms=500)
            batch = await nlp.analyze_batch(["b", "c"], tasks=["ner"])
            service.respond = lambda path, body: (422, {}, {"detail": "unknown task"})
            with pytest.raises(ServiceError) as raised:
                await nlp.analyze("d")
        return one, batch, raised.value

    service.respond = overloaded_first(1, "0")
    one, batch, error = asyncio.run(calls())
    assert one == answer("a", ALL)
    assert batch == [answer("b", ["ner"]), answer("c", ["ner"])]
    assert (error.status, error.detail) == (422, "unknown task")
    assert [(r.path, r.body) for r in service.requests] == [
        ("/analyze", {"text": "a", "deadline_ms": 500}),  # the 503
        ("/analyze", {"text": "a", "deadline_ms": 500}),
        ("/analyze/batch", {"texts": ["b", "c"], "tasks": ["ner"]}),
        ("/analyze", {"text": "d"}),  # a 422 is not retried
    ]


def test_async_retries_wait_for_retry_after_and_are_bounded(service):
    async def call(retries: int) -> dict:
        async with AsyncClient(service.url, retries=retries) as nlp:
            return await nlp.analyze_batch(["busy"])

    service.respond = overloaded_first(1, "1")
    start = time.monotonic()
    assert asyncio.run(call(1)) == [answer("busy", ALL)]
    assert time.monotonic() - start >= 0.95

    service.respond, service.requests = overloaded_first(9, "0"), []
    with pytest.raises(ServiceError, match="HTTP 503: overloaded"):
        asyncio.run(call(3))
    assert len(service.requests) == 4


def test_async_close_closes():
    async def closed() -> None:
        async with AsyncClient("http://127.0.0.1:9") as nlp:
            pass
        await nlp.health()

    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(closed())
