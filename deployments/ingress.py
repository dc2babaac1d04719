"""The ingress: FastAPI routes (and the gRPC methods of grpc_edge), request limits, @serve.batch
tokenization and fan-out."""

import asyncio
import time
from dataclasses import dataclass, replace
from functools import partial
from importlib import metadata

import ray
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments import HEALTH_CHECK_PERIOD_S
from deployments.grpc_edge import GrpcEdge
from deployments.guard import RequestGuard
from deployments.metrics import IngressMetrics
from nlpserve import tracing
from nlpserve.admission import Limits, Refused
from nlpserve.answer import Answer
from nlpserve.cache import ResultCache
from nlpserve.dispatch import CallLimits, detached
from nlpserve.errors import describe
from nlpserve.pipeline import Item, Pending, Pipeline
from nlpserve.resources import PAGE
from nlpserve.schemas import (
    ERRORS,
    AnalyzeRequest,
    AnalyzeResponse,
    BatchRequest,
    BatchResponse,
    IngressSettings,
    VersionResponse,
    field_errors,
)
from nlpserve.tokens import TokenCache
from nlpserve.topology import Topology

api = FastAPI(
    title="nlpserve",
    version=metadata.version("nlpserve"),
    description="Named entities, sentiment and an extractive summary of a text, in one call.",
    # FastAPI's own spans would take their parent from the HTTP headers, outside Serve's trace of the request.
    telemetry={"tracing": False},
)
api.state.settings = IngressSettings()  # replaced by Ingress.reconfigure; RequestGuard reads it per request


api.add_middleware(RequestGuard, state=api.state)


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = [e for e in errors if e.get("type") == "json_invalid"]
    if bad_json:
        ctx = bad_json[0].get("ctx", {})
        return JSONResponse({"detail": f"malformed JSON: {ctx.get('error', 'cannot parse body')}"}, status_code=400)
    return JSONResponse({"detail": field_errors(errors)}, status_code=422)


@dataclass(frozen=True)
class Encoding:
    """An encoder call on its way: its heads get ``vectors``, the ObjectRef of its answer, nested in their
    call's arguments, so each head's replica awaits it itself and the vectors go from the Encoder to the
    heads without a round trip through the ingress."""

    response: DeploymentResponse
    vectors: ray.ObjectRef

    async def done(self, timeout: float) -> None:
        # Waited for, not fetched: the vectors go to the heads, wherever they run.
        await asyncio.to_thread(ray.wait, [self.vectors], fetch_local=False, timeout=timeout)

    def cancel(self) -> None:
        self.response.cancel()


async def _encode(encoder: DeploymentHandle, refs: list, rows: list[list[int]]) -> Encoding:
    response = encoder.remote(refs, rows)
    try:
        return Encoding(response, await response._to_object_ref())  # once a replica has taken the call
    except BaseException:
        response.cancel()
        raise


NOT_READY = {
    503: {
        "description": "Not ready: `missing` names each task or encoder that keeps the service from being ready.",
        "content": {
            "application/json": {
                "example": {"status": "not ready", "missing": {"ner": "did not say what it reads (TimeoutError)"}}
            }
        },
    }
}


# Beyond 128 requests in the replica and 64 waiting in the proxy, callers get a fast 503 with
# Retry-After instead of joining an unbounded queue.
@serve.deployment(
    name="Ingress",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=128,
    max_queued_requests=64,
    backpressure_config={"retry_after_s": 1},
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
@serve.ingress(api)
class Ingress(GrpcEdge):
    def __init__(
        self,
        ner: DeploymentHandle,
        sentiment: DeploymentHandle,
        summary: DeploymentHandle,
        encoder: DeploymentHandle | None = None,
    ) -> None:
        self.handles = {"ner": ner, "sentiment": sentiment, "summary": summary}
        self.encoders = {"encoder": encoder} if encoder else {}
        self.deployments = {**self.handles, **self.encoders}  # all the ingress calls
        self.page_html = PAGE.read_text()
        self.settings = IngressSettings()
        self.metrics = IngressMetrics()
        self.topology = Topology(self._ask_inputs, self.handles, self.encoders)
        self.pipeline = Pipeline(
            self.topology,
            {name: h.remote for name, h in self.handles.items()},
            put=ray.put,
            encoders={name: partial(_encode, h) for name, h in self.encoders.items()},
            on_call=self.metrics.call,
            on_send=self.metrics.send,
            on_batch=lambda size, tokenized, unique: self.metrics.batch(
                size, tokenized, unique, self.settings.token_cache_bytes > 0
            ),
        )
        self.results: ResultCache | None = None
        self.caches: tuple | None = None  # the settings the caches were made with
        self.asked: dict[str, tuple[float, asyncio.Future]] = {}  # per deployment, its latest info() call
        self.counting = asyncio.Semaphore(1)  # requests whose tokens are being counted (_admit)
        self.starting = asyncio.Lock()  # held while a batch starts (_begin)
        self.reconfigure({})

    def reconfigure(self, config: dict) -> None:
        """Apply the deployment's user_config; the caches start empty when their own settings change."""
        self.settings = s = IngressSettings(**config)
        self.analyze_items.set_max_batch_size(s.max_batch_size)
        self.analyze_items.set_batch_wait_timeout_s(s.batch_wait_timeout_s)
        self.pipeline.limit(
            CallLimits(
                s.task_timeout_s,
                s.task_timeouts_s,
                s.max_calls_in_flight,
                s.max_batch_size,
                s.together_s,
                s.slow_call_s,
            )
        )
        self.limits = Limits(s.max_text_chars, s.max_request_chars, s.max_text_tokens, s.max_request_tokens)
        api.state.settings = s
        caches = (s.token_cache_bytes, s.token_cache_ttl_s, s.result_cache_bytes, s.result_cache_ttl_s)
        if caches == self.caches:  # keyed on texts and on what made each answer: still right
            return
        self.caches = caches
        self.topology.set_cache(
            lambda: TokenCache(s.token_cache_bytes, s.token_cache_ttl_s) if s.token_cache_bytes else None
        )
        self.results = ResultCache(s.result_cache_bytes, s.result_cache_ttl_s) if s.result_cache_bytes else None

    # Starting a batch only tokenizes, stores and queues its task calls, so one at a time is enough.
    # Its requests were admitted before (_admit). Size and wait come from IngressSettings (reconfigure).
    @serve.batch(max_concurrent_batches=1)
    async def analyze_items(self, requests: list[list[Item]]) -> list[list[Pending]]:
        items = [replace(it, request=k) for k, request in enumerate(requests) for it in request]
        pending = await self._begin(items)
        out, k = [], 0
        for request in requests:
            out.append(pending[k : k + len(request)])
            k += len(request)
        return out

    async def _ask_one(self, method: str, handle: DeploymentHandle):
        """What a replica's ``method`` returns, or the exception that stopped it; also when Serve cancelled
        the call (only a cancel of this task itself is passed on)."""
        try:
            return await asyncio.wait_for(getattr(handle, method).remote(), self.settings.task_timeout_s)
        except asyncio.CancelledError as e:
            if asyncio.current_task().cancelling():
                raise
            return e
        except Exception as e:  # noqa: BLE001 - the caller reports it for that task only
            return e

    async def _ask(self, method: str, handles: dict[str, DeploymentHandle]) -> dict:
        """{name: what a replica's ``method`` returns, or the exception that stopped it}."""
        answers = await asyncio.gather(*(self._ask_one(method, h) for h in handles.values()))
        return dict(zip(handles, answers))

    async def _ask_inputs(self) -> dict:
        """What each task's model and each encoder reads (tokenizer, encoder)."""
        return await self._ask("inputs", self.deployments)

    async def _cached(
        self, texts: list[str], tasks: tuple[str, ...], arrived: float, deadline: float | None
    ) -> list[dict]:
        """Per text, the tasks the result cache answers: only with answers made by what answers each
        task now. A first look uses what answered last; only if it finds something are the replicas of
        those tasks asked what answers now, for no longer than the request's deadline."""
        if not self.results:
            return [{} for _ in texts]
        candidates = tuple(t for t in tasks if any(self.results.might_hit(text, (t,)) for text in texts))
        now = await self._answering_now(candidates, arrived, deadline) if candidates else {}
        cached = [self.results.lookup(text, tasks, now) for text in texts]
        hits = sum(map(len, cached))
        self.metrics.result_cache(hits=hits, misses=len(tasks) * len(texts) - hits)
        return cached

    async def _answering_now(self, tasks: tuple[str, ...], arrived: float, deadline: float | None) -> dict[str, dict]:
        """Per task of ``tasks`` whose answer came in time, what answers it now, as its answers' ``models``
        say: the model, its settings and device, and for a head the kernel of the encoder it reads."""
        asked = {name: self._info(name, arrived) for name in self.topology.reads(tasks)}
        left = None if deadline is None else max(0.0, deadline - time.perf_counter())
        await asyncio.wait(asked.values(), timeout=left)
        infos = {name: a.result() for name, a in asked.items() if a.done()}
        now = {task: self.topology.answering(task, infos) for task in tasks}
        return {task: info for task, info in now.items() if isinstance(info, dict)}

    def _info(self, name: str, arrived: float) -> asyncio.Future:
        """``info()`` of deployment ``name``: a call in flight that began after ``arrived`` is shared, an older
        one is not (it may have been answered by a model swapped since), so a new one is made."""
        started, call = self.asked.get(name, (-1.0, None))
        if call is None or started < arrived:
            call = detached(self._ask_one("info", self.deployments[name]))  # shared by the requests that join it
            self.asked[name] = (time.perf_counter(), call)
        return call

    async def _admit(self, texts: list[str], labels: list[str], tasks: tuple[str, ...]) -> None:
        """413 for a request over a limit, before it joins a batch, so a refusal costs only its own work:
        characters at once; tokens only if its characters could pass a token limit, counted in a thread,
        one such request at a time, with the tokenizers of its own tasks."""
        try:
            self.limits.check_chars(texts, labels)
            if self.limits.needs_counting(texts):
                tokenizers = await self.topology.tokenizers(tasks)
                async with self.counting:
                    await asyncio.to_thread(self.limits.check_tokens, texts, labels, tokenizers)
        except Refused as e:
            raise HTTPException(413, str(e)) from None

    async def _analyze(
        self, texts: list[str], labels: list[str], tasks: tuple[str, ...], deadline_ms: int | None
    ) -> list[dict]:
        """One answer per text: the tasks the result cache has, the others from one batched request."""
        received = time.perf_counter()
        deadline = None if deadline_ms is None else received + deadline_ms / 1000
        await self._admit(texts, labels, tasks)
        span = tracing.recording(serve.get_trace_context())  # None unless Serve traces this request
        cached = await self._cached(texts, tasks, received, deadline)
        items = {
            i: Item(text, missing, received, deadline, trace=span)
            for i, (text, found) in enumerate(zip(texts, cached))
            if (missing := tuple(t for t in tasks if t not in found))
        }
        alone = self.limits.has_long_text(texts)  # its calls would hold up the texts they share
        started = await self._start(list(items.values()), deadline, alone) if items else []
        if started is None:  # the deadline passed while the batch queued or tokenized
            done = {i: self.pipeline.expired_result(it) for i, it in items.items()}
        else:
            pending = dict(zip(items, started))
            done = dict(zip(pending, await asyncio.gather(*(self.pipeline.finish(p) for p in pending.values()))))
        results = []
        for i, (text, found) in enumerate(zip(texts, cached)):
            answer = done.get(i) or Answer.unbatched()
            if i in done and self.results:
                self.results.store(text, answer.tasks, answer.models)
            for task, (cached_answer, model) in found.items():
                answer.add_cached(task, cached_answer, model)
            results.append(answer.json(ingress_ms=round((time.perf_counter() - received) * 1000, 3)))
        return results

    async def _start(self, items: list[Item], deadline: float | None, alone: bool) -> list[Pending] | None:
        """The items' batch started (tokenized, task calls made), or None if ``deadline`` came first: a
        deadline counts from the request's arrival, batch queue and tokenization included. Items that
        start after their request gave up (deadline, disconnect) leave their task calls at once.
        ``alone``: in a batch, and calls, of their own, so that no other request's texts share (and wait
        for) the calls of a long text."""
        start = asyncio.ensure_future(self._begin(items, alone=True) if alone else self.analyze_items(items))
        try:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            await asyncio.wait({start}, timeout=left)
        finally:
            if not start.done():
                start.add_done_callback(self._release)
        return start.result() if start.done() else None

    async def _begin(self, items: list[Item], alone: bool = False) -> list[Pending]:
        """The one way a batch starts: one at a time, as the tokenizers and their caches are shared."""
        async with self.starting:
            return await self.pipeline.start(items, alone)

    def _release(self, start: asyncio.Future) -> None:
        if not start.cancelled() and start.exception() is None:
            for p in start.result():
                self.pipeline.release(p)

    @api.post("/analyze", response_model=AnalyzeResponse, response_model_exclude_none=True, responses=ERRORS)
    async def analyze(self, request: AnalyzeRequest) -> dict:
        return (await self._analyze([request.text], ["text"], tuple(request.tasks), request.deadline_ms))[0]

    @api.post("/analyze/batch", response_model=BatchResponse, response_model_exclude_none=True, responses=ERRORS)
    async def analyze_batch(self, request: BatchRequest) -> dict:
        limit = self.settings.max_batch_items
        if len(request.texts) > limit:
            raise HTTPException(413, f"batch has {len(request.texts)} texts; the limit is {limit}")
        labels = [f"texts[{i}]" for i in range(len(request.texts))]
        return {"results": await self._analyze(request.texts, labels, tuple(request.tasks), request.deadline_ms)}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> str:
        """A page to try the service in a browser (no external assets)."""
        return self.page_html

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz", responses=NOT_READY)
    async def readyz(self) -> JSONResponse:
        """Ready when every task and encoder said what it reads in the last round of inputs() and every task
        is in a tokenizer group, else 503 naming what is missing. A stale round (a task did not answer, a
        model was swapped) is asked again first, so a new ingress is ready on its first probe."""
        missing = await self._missing()
        if missing:
            return JSONResponse({"status": "not ready", "missing": missing}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _missing(self) -> dict[str, str]:
        """What is not ready (readyz, and the gRPC Health), after a fresh round of inputs() if it was stale."""
        await self.topology.fresh()
        return self.topology.unready()

    @api.get("/version", response_model=VersionResponse, response_model_exclude_none=True)
    async def version(self) -> dict:
        """Asked of the task replicas on every call, so it follows redeploys and reconfigures."""
        await self.topology.fresh()
        infos = await self._ask("info", self.deployments)
        now = {task: self.topology.answering(task, infos) for task in self.handles}
        tasks = {name: {"error": describe(a)} if isinstance(a, BaseException) else a for name, a in now.items()}
        groups = self.topology.group_info()
        return {"service": metadata.version("nlpserve"), "tokenizer_groups": groups, "tasks": tasks}

    async def stats(self) -> dict:
        """Counters: batches, tokenizations (per tokenizer group), puts, calls per task, cache hits and misses."""
        results = self.results.counts if self.results else {}
        tokens = self.topology.tokenizer_counts()
        return {
            **self.pipeline.stats.flat(),
            "refreshes": self.topology.refreshes,
            "result_cache_hits": results.get("hits", 0),
            "result_cache_misses": results.get("misses", 0),
            "tokenizations": tokens["calls"],
            "token_cache_hits": tokens["cache_hits"],
            "token_cache_misses": tokens["cache_misses"],
            "groups": self.topology.group_info(),
        }
