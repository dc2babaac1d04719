"""The result cache, without Ray."""

from nlpserve.cache import ResultCache

V1 = {"name": "m", "version": "1", "checksum": "aaa"}
V2 = {"name": "m", "version": "2", "checksum": "bbb"}


def answer(task_models: dict, value: str) -> dict:
    return {"models": task_models, **{t: {"label": value} for t in task_models}}


def test_hits_per_task_whatever_the_task_set():
    cache = ResultCache(10, 300)
    assert cache.lookup("t", ("sentiment",)) == {}  # nothing known yet
    cache.store("t", answer({"sentiment": V1, "ner": V1}, "x"))
    assert cache.lookup("t", ("sentiment",)) == {"sentiment": ({"label": "x"}, V1)}
    assert set(cache.lookup("t", ("ner", "sentiment", "summary"))) == {"ner", "sentiment"}
    assert cache.lookup("other text", ("ner",)) == {}
    assert cache.counts["hits"] == 3 and cache.counts["misses"] == 3


def test_a_new_model_version_never_gets_old_answers():
    cache = ResultCache(10, 300)
    cache.store("t", answer({"sentiment": V1}, "old"))
    cache.store("u", answer({"sentiment": V2}, "new"))  # the task's model changed
    assert cache.lookup("t", ("sentiment",)) == {}
    assert cache.lookup("u", ("sentiment",)) == {"sentiment": ({"label": "new"}, V2)}


def test_errors_are_not_stored_and_entries_expire_and_are_evicted():
    now = [0.0]
    cache = ResultCache(2, 300, timer=lambda: now[0])
    cache.store("t", {"models": {"ner": V1}, "ner": {"error": "ner timed out after 30 s"}})
    assert cache.lookup("t", ("ner",)) == {}
    for text in ("a", "b", "c"):  # size 2: "a" is evicted
        cache.store(text, answer({"ner": V1}, text))
    assert cache.lookup("a", ("ner",)) == {} and set(cache.lookup("c", ("ner",))) == {"ner"}
    now[0] = 301.0
    assert cache.lookup("c", ("ner",)) == {}
