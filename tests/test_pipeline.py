"""The ingress core without Ray: one tokenization and one put per batch, one call per task."""

import asyncio

import pytest

from nlpserve.pipeline import Item, Pipeline


class Store:
    """Stands in for ray.put: records what was stored and hands back a reference."""

    def __init__(self):
        self.objects = []

    def __call__(self, obj):
        self.objects.append(obj)
        return ("ref", len(self.objects) - 1)

    def get(self, ref):
        return self.objects[ref[1]]


def make(tokenizer, store, tasks, timeout_s=30.0):
    calls = {"tokenize": 0}

    def tokenize(texts):
        calls["tokenize"] += 1
        return tokenizer(texts)

    return Pipeline(tokenize, tasks, put=store, timeout_s=timeout_s), calls


def counting_task(store, log, name):
    async def call(refs, rows):
        log.append((name, refs, list(rows)))
        batch = store.get(refs[0])
        return {
            "results": [f"{name}:{batch.texts[i]}" for i in rows],
            "model": {"name": name, "version": "1", "checksum": "c"},
            "get_ms": 0.5,
            "compute_ms": 2.0,
        }

    return call


def test_one_tokenization_one_put_one_call_per_task(tokenizer):
    store, log = Store(), []
    tasks = {n: counting_task(store, log, n) for n in ("ner", "sentiment", "summary")}
    pipe, calls = make(tokenizer, store, tasks)
    items = [
        Item("a b", ("ner", "sentiment", "summary")),
        Item("c d", ("sentiment",)),
        Item("e f", ("sentiment", "ner")),
    ]
    out = asyncio.run(pipe.run(items))
    timings = [r.pop("timings") for r in out]
    models = [r.pop("models") for r in out]
    assert models[1] == {"sentiment": {"name": "sentiment", "version": "1", "checksum": "c"}}
    assert calls["tokenize"] == 1
    assert len(store.objects) == 1 and store.objects[0].texts == ["a b", "c d", "e f"]
    assert sorted((name, rows) for name, _, rows in log) == [
        ("ner", [0, 2]),
        ("sentiment", [0, 1, 2]),
        ("summary", [0]),
    ]
    assert all(refs == [("ref", 0)] for _, refs, _ in log)  # the reference, nested in a list
    assert out == [
        {"ner": "ner:a b", "sentiment": "sentiment:a b", "summary": "summary:a b"},
        {"sentiment": "sentiment:c d"},
        {"ner": "ner:e f", "sentiment": "sentiment:e f"},
    ]
    assert pipe.stats["batches"] == 1 and pipe.stats["puts"] == 1
    assert all(t["batch_size"] == 3 and t["queue_ms"] >= 0 and t["tokenize_ms"] >= 0 for t in timings)
    assert set(timings[1]["tasks"]) == {"sentiment"}
    assert timings[0]["tasks"]["ner"]["compute_ms"] == 2.0 and timings[0]["tasks"]["ner"]["call_ms"] >= 0


def test_task_absent_from_batch_is_not_called(tokenizer):
    store, log = Store(), []
    tasks = {n: counting_task(store, log, n) for n in ("ner", "sentiment", "summary")}
    pipe, _ = make(tokenizer, store, tasks)
    asyncio.run(pipe.run([Item("x", ("sentiment",))]))
    assert [name for name, _, _ in log] == ["sentiment"]


@pytest.mark.parametrize("failure", ["raise", "hang", "short"])
def test_failed_task_degrades_only_itself(tokenizer, failure):
    store, log = Store(), []

    async def broken(refs, rows):
        if failure == "raise":
            raise ValueError("model exploded")
        if failure == "hang":
            await asyncio.sleep(60)
        return {"results": [], "model": {}, "get_ms": 0.0, "compute_ms": 0.0}

    tasks = {"ner": broken, "sentiment": counting_task(store, log, "sentiment")}
    pipe, _ = make(tokenizer, store, tasks, timeout_s=0.2)
    out = asyncio.run(pipe.run([Item("x", ("ner", "sentiment")), Item("y", ("ner",))]))
    assert out[0]["sentiment"] == "sentiment:x"
    expected = {"raise": "ner failed: ValueError: model exploded", "hang": "ner timed out after 0.2 s"}
    for r in out:
        assert "error" in r["ner"]
        if failure in expected:
            assert r["ner"]["error"] == expected[failure]
        else:
            assert "returned 0 results for 2 texts" in r["ner"]["error"]
