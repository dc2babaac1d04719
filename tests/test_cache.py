"""The result cache, without Ray."""

import json
import sys

from nlpserve.cache import ResultCache
from nlpserve.schemas import ErrorCode, TaskError

V1 = {"name": "m", "version": "1", "checksum": "aaa", "settings": "s1"}
V2 = {"name": "m", "version": "2", "checksum": "bbb", "settings": "s1"}
V1_RESET = {**V1, "settings": "s2"}  # the same model, reconfigured (e.g. another summary ratio)
V1_INT8 = {**V1, "encoder": "onnx-int8"}  # a head over vectors of another encoder kernel
ALL = {"ner": V1, "sentiment": V1, "summary": V1}


def answer(task_models: dict, value: str) -> tuple[dict, dict]:
    return {t: {"label": value} for t in task_models}, task_models


def test_hits_per_task_whatever_the_task_set():
    cache = ResultCache(10_000, 300)
    assert cache.lookup("t", ("sentiment",), ALL) == {}  # nothing stored yet
    cache.store("t", *answer({"sentiment": V1, "ner": V1}, "x"))
    assert cache.lookup("t", ("sentiment",), ALL) == {"sentiment": ({"label": "x"}, V1)}
    assert set(cache.lookup("t", ("ner", "sentiment", "summary"), ALL)) == {"ner", "sentiment"}
    assert cache.lookup("other text", ("ner",), ALL) == {}
    assert cache.lookup("t", ("ner",), {}) == {}  # what answers ner now is unknown: no hit
    assert cache.counts["hits"] == 3 and cache.counts["misses"] == 4
    assert cache.latest == {"sentiment": V1, "ner": V1}


def test_answers_come_only_from_the_current_model_and_settings_in_either_order_of_a_swap():
    cache = ResultCache(10_000, 300)
    cache.store("t", *answer({"sentiment": V1}, "v1"))
    for now in (V2, V1_RESET, V1_INT8):  # swapped to another model, settings or encoder kernel
        assert cache.lookup("t", ("sentiment",), {"sentiment": now}) == {}
    cache.store("t", *answer({"sentiment": V2}, "v2"))
    assert cache.lookup("t", ("sentiment",), {"sentiment": V2}) == {"sentiment": ({"label": "v2"}, V2)}
    # Swapped back: the newer answer, stored last, is not served for the older model.
    assert cache.lookup("t", ("sentiment",), {"sentiment": V1}) == {"sentiment": ({"label": "v1"}, V1)}


def test_errors_are_not_stored_and_entries_expire_and_are_evicted():
    now = [0.0]
    one = sys.getsizeof("a") + len(json.dumps({"label": "a"}))  # the bytes of one text's answer
    cache = ResultCache(2 * one, 300, timer=lambda: now[0])
    cache.store("t", {"ner": TaskError(error="ner timed out after 30 s", code=ErrorCode.timeout)}, {"ner": V1})
    assert cache.lookup("t", ("ner",), ALL) == {} and cache.latest == {}
    for text in ("a", "b", "c"):  # room for 2: "a" is evicted
        cache.store(text, *answer({"ner": V1}, text))
    assert cache.lookup("a", ("ner",), ALL) == {} and set(cache.lookup("c", ("ner",), ALL)) == {"ner"}
    now[0] = 301.0
    assert cache.lookup("c", ("ner",), ALL) == {}


def test_the_cache_is_bounded_by_bytes_not_by_entries():
    """One NER answer for a long text can weigh as much as thousands of short ones."""
    small = {"ner": [{"entity_group": "ORG", "word": "Apple"}]}
    big = {"ner": [{"entity_group": "ORG", "word": "Apple"}] * 10_000}  # ~420 kB of JSON
    cache = ResultCache(425_000, 300)  # the short ones take ~10 kB, the long one ~420 kB
    for i in range(100):
        cache.store(f"short {i}", small, {"ner": V1})
    assert all(cache.lookup(f"short {i}", ("ner",), ALL) for i in range(100))
    cache.store("long", big, {"ner": V1})  # pushes most short ones out
    assert cache.lookup("long", ("ner",), ALL)
    assert sum(bool(cache.lookup(f"short {i}", ("ner",), ALL)) for i in range(100)) < 100
    cache.store("huge", {"ner": big["ner"] * 2}, {"ner": V1})  # alone over the bound: not kept, no error
    assert not cache.lookup("huge", ("ner",), ALL)
