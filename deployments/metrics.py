"""Prometheus metrics of the ingress, through Ray Serve's metrics API (exported by Ray)."""

from ray.serve import metrics

from nlpserve.schemas import TaskTiming

MS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000]
SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64]


class IngressMetrics:
    def __init__(self) -> None:
        self.task_latency = metrics.Histogram(
            "nlpserve_task_latency_ms", "Round trip of one task call for a batch.", MS_BUCKETS, tag_keys=("task",)
        )
        self.task_compute = metrics.Histogram(
            "nlpserve_task_compute_ms", "Model time of one task call for a batch.", MS_BUCKETS, tag_keys=("task",)
        )
        self.task_failures = metrics.Counter(
            "nlpserve_task_failures", "Task calls that failed, timed out or had no tokenizer.", ("task", "kind")
        )
        self.batch_size = metrics.Histogram("nlpserve_batch_size", "Texts per tokenized batch.", SIZE_BUCKETS)
        self.stage_texts = metrics.Histogram(
            "nlpserve_call_texts",
            "Texts per remote call of a deployment (Encoder, or a task): grows with the load.",
            SIZE_BUCKETS,
            tag_keys=("callee",),  # Serve reserves "deployment" for the replica that records it
        )
        self.batches = metrics.Counter("nlpserve_batches", "Batches run by the ingress.")
        self.tokenizations = metrics.Counter(
            "nlpserve_tokenizations", "Tokenizer calls (one per batch, none when all its texts were cached)."
        )
        self.cache = metrics.Counter("nlpserve_cache_lookups", "Cache lookups.", tag_keys=("cache", "outcome"))

    def batch(self, size: int, tokenized: int, unique_texts: int, token_cache: bool) -> None:
        self.batch_size.observe(size)
        self.batches.inc()
        if tokenized:
            self.tokenizations.inc()
        if token_cache:
            self._lookups("token", unique_texts - tokenized, tokenized)

    def send(self, name: str, texts: int) -> None:
        self.stage_texts.observe(texts, tags={"callee": name})

    def call(self, task: str, timing: TaskTiming, code: str | None) -> None:
        """One task call of a batch; ``code`` says how it failed: the task error's code, ``failed``, ``timeout``
        or ``unavailable`` (docs/operations.md, Metrics). A request's ``deadline_exceeded`` is no failed call:
        not counted."""
        self.task_latency.observe(timing.call_ms, tags={"task": task})
        if timing.compute_ms is not None:
            self.task_compute.observe(timing.compute_ms, tags={"task": task})
        if code:
            self.task_failures.inc(tags={"task": task, "kind": code})

    def result_cache(self, hits: int, misses: int) -> None:
        self._lookups("result", hits, misses)

    def _lookups(self, cache: str, hits: int, misses: int) -> None:
        for outcome, n in (("hit", hits), ("miss", misses)):
            if n > 0:  # Ray's Counter.inc refuses 0
                self.cache.inc(n, tags={"cache": cache, "outcome": outcome})
