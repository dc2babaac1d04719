"""The ingress core without Ray: one tokenization and one put per tokenizer group and batch, one call per task."""

import asyncio
import time
from dataclasses import replace

import pytest
from batches import run_batch

from nlpserve.dispatch import CallLimits, Reply
from nlpserve.errors import TokenizerMismatch
from nlpserve.pipeline import Item, Pipeline
from nlpserve.tokens import TokenCache, default_spec
from nlpserve.topology import Inputs, Topology


class Store:
    """Stands in for ray.put: records what was stored and hands back a reference."""

    def __init__(self):
        self.objects = []

    def __call__(self, obj):
        self.objects.append(obj)
        return ("ref", len(self.objects) - 1)

    def get(self, ref):
        return self.objects[ref[1]]


def wired(inputs, tasks, encoders=None, cache=lambda: None, **kwargs) -> Pipeline:
    """A Pipeline and the Topology of its tasks and encoders, wired as the ingress wires them."""
    return Pipeline(Topology(inputs, tasks, encoders or {}, cache), tasks, encoders=encoders, **kwargs)


def make(store, tasks, timeout_s=30.0, specs=None):
    async def ask():
        return {n: Inputs(s) for n, s in (specs or dict.fromkeys(tasks, default_spec())).items()}

    return wired(ask, tasks, put=store, limits=CallLimits(timeout_s=timeout_s))


def tokenizations(pipe) -> int:
    return sum(g["tokenizations"] for g in pipe.topology.group_info())


def reply(results: list, name: str = "m") -> Reply:
    """A replica's answer, as deployments/base.py makes it."""
    model = {"name": name, "version": "1", "checksum": "c"}
    return Reply(results, model, len(results), time.time(), get_ms=0.5, compute_ms=2.0, replica_ms=3.0)


def counting_task(store, log, name):
    async def call(refs, rows, encoded=None):
        log.append((name, refs, rows))
        return reply([f"{name}:{store.get(ref).texts[i]}" for ref, rs in zip(refs, rows) for i in rs], name)

    return call


def test_each_batch_reports_its_size_and_what_it_tokenized():
    """The ingress's batch metrics come from this report (not from one item's timings)."""
    store, log, batches = Store(), [], []
    tasks = {"sentiment": counting_task(store, log, "sentiment")}
    pipe = wired(
        lambda: _specs({"sentiment": Inputs(default_spec())}),
        tasks,
        put=store,
        cache=lambda: TokenCache(1 << 20, 60),
        on_batch=lambda *report: batches.append(report),
    )
    asyncio.run(run_batch(pipe, [Item("x y", ("sentiment",)), Item("x y", ("sentiment",)), Item("z", ("sentiment",))]))
    asyncio.run(run_batch(pipe, [Item("x y", ("sentiment",)), Item("new", ("sentiment",))]))
    assert batches == [(3, 2, 2), (2, 1, 2)]  # (texts, tokenized, distinct): repeats come from the token cache


def test_one_tokenization_one_put_one_call_per_task():
    store, log = Store(), []
    tasks = {n: counting_task(store, log, n) for n in ("ner", "sentiment", "summary")}
    pipe = make(store, tasks)
    items = [
        Item("a b", ("ner", "sentiment", "summary")),
        Item("c d", ("sentiment",)),
        Item("e f", ("sentiment", "ner")),
    ]
    out = asyncio.run(run_batch(pipe, items))
    timings = [r.pop("timings") for r in out]
    models = [r.pop("models") for r in out]
    assert models[1] == {"sentiment": {"name": "sentiment", "version": "1", "checksum": "c"}}
    assert tokenizations(pipe) == 1
    assert len(store.objects) == 1 and store.objects[0].texts == ["a b", "c d", "e f"]
    assert sorted((name, rows) for name, _, rows in log) == [
        ("ner", [[0, 2]]),
        ("sentiment", [[0, 1, 2]]),
        ("summary", [[0]]),
    ]
    assert all(refs == [("ref", 0)] for _, refs, _ in log)  # the reference, nested in a list
    assert out == [
        {"ner": "ner:a b", "sentiment": "sentiment:a b", "summary": "summary:a b"},
        {"sentiment": "sentiment:c d"},
        {"ner": "ner:e f", "sentiment": "sentiment:e f"},
    ]
    assert pipe.stats.batches == 1 and pipe.stats.puts == 1
    assert all(t["batch_size"] == 3 and t["queue_ms"] >= 0 and t["tokenize_ms"] >= 0 for t in timings)
    assert set(timings[1]["tasks"]) == {"sentiment"}
    assert timings[0]["tasks"]["ner"]["compute_ms"] == 2.0 and timings[0]["tasks"]["ner"]["call_ms"] >= 0


def test_task_absent_from_batch_is_not_called():
    store, log = Store(), []
    tasks = {n: counting_task(store, log, n) for n in ("ner", "sentiment", "summary")}
    pipe = make(store, tasks)
    asyncio.run(run_batch(pipe, [Item("x", ("sentiment",))]))
    assert [name for name, _, _ in log] == ["sentiment"]


@pytest.mark.parametrize("failure", ["raise", "hang", "short"])
def test_failed_task_degrades_only_itself(failure):
    store, log = Store(), []

    async def broken(refs, rows):
        if failure == "raise":
            raise ValueError("model exploded")
        if failure == "hang":
            await asyncio.sleep(60)
        return reply([])

    tasks = {"ner": broken, "sentiment": counting_task(store, log, "sentiment")}
    pipe = make(store, tasks, timeout_s=0.2)
    out = asyncio.run(run_batch(pipe, [Item("x", ("ner", "sentiment")), Item("y", ("ner",))]))
    assert out[0]["sentiment"] == "sentiment:x"
    expected = {"raise": "ner failed: ValueError: model exploded", "hang": "ner timed out after 0.2 s"}
    for r in out:
        assert "error" in r["ner"]
        if failure in expected:
            assert r["ner"]["error"] == expected[failure]
        else:
            assert "returned 0 results for 2 texts" in r["ner"]["error"]


def test_tasks_are_grouped_by_tokenizer_fingerprint_and_each_group_tokenized_once(tiny_models):
    from nlpserve.models.hf import Seq2SeqSummarizer, SequenceClassifier, TokenClassifier

    models = {
        "ner": TokenClassifier("ner", str(tiny_models["ner"])),
        "sentiment": SequenceClassifier("sentiment", str(tiny_models["sentiment"])),
        "summary": Seq2SeqSummarizer("summary", str(tiny_models["summary"]), max_length=8, min_length=1, num_beams=1),
    }
    store, log = Store(), []
    tasks = {n: counting_task(store, log, n) for n in models}
    pipe = make(store, tasks, specs={n: m.spec for n, m in models.items()})
    items = [Item("Tim Cook is in Paris.", ("ner", "sentiment", "summary")), Item("Apple Inc.", ("ner",))]
    out = asyncio.run(run_batch(pipe, items))
    # BERT and DistilBERT share a WordPiece vocabulary: one group; BART's byte-level BPE: another.
    assert sorted(g["tasks"] for g in pipe.topology.group_info()) == [["ner", "sentiment"], ["summary"]]
    assert [g["tokenizations"] for g in pipe.topology.group_info()] == [1, 1]
    assert len(store.objects) == 2 and pipe.stats.puts == 2
    refs = {name: refs[0] for name, refs, _ in log}
    assert refs["ner"] == refs["sentiment"] != refs["summary"]
    assert store.get(refs["summary"]).fingerprint == models["summary"].spec.fingerprint
    assert out[0]["timings"]["groups"] == 2

    # Only NER asked: only its group is tokenized and stored.
    asyncio.run(run_batch(pipe, [Item("Berlin.", ("ner",))]))
    assert [g["tokenizations"] for g in pipe.topology.group_info()] == [2, 1] and len(store.objects) == 3


def test_a_cased_and_an_uncased_tokenizer_of_one_vocabulary_are_two_groups(tiny_models):
    from nlpserve.models.hf import SequenceClassifier, TokenClassifier

    # As dslim/bert-base-NER (cased) and the DistilBERT SST-2 model (uncased) in config/hub.yaml.
    models = {
        "ner": TokenClassifier("ner", str(tiny_models["cased-ner"])),
        "sentiment": SequenceClassifier("sentiment", str(tiny_models["sentiment"])),
    }
    store, log = Store(), []
    pipe = make(store, {n: counting_task(store, log, n) for n in models}, specs={n: m.spec for n, m in models.items()})
    out = asyncio.run(run_batch(pipe, [Item("Tim Cook is in Paris.", ("ner", "sentiment"))]))
    assert sorted(g["tasks"] for g in pipe.topology.group_info()) == [["ner"], ["sentiment"]]
    assert [g["tokenizations"] for g in pipe.topology.group_info()] == [1, 1] and len(store.objects) == 2
    assert out[0]["timings"]["groups"] == 2
    refs = {name: refs[0] for name, refs, _ in log}
    cased, uncased = store.get(refs["ner"]), store.get(refs["sentiment"])
    assert cased.fingerprint == models["ner"].spec.fingerprint
    # The vocabulary is lower case: the cased tokenizer finds no "Tim", the uncased one finds "tim".
    assert len(cased.ids) == len(uncased.ids) and list(cased.ids) != list(uncased.ids)


def test_after_a_mismatch_the_next_batch_is_tokenized_for_the_new_model():
    """A swapped model refuses the tokens of its old tokenizer; the batch after that waits for the new
    groups, so it is already tokenized for the new model (not only asked again in the background)."""
    store, specs, seen = Store(), [default_spec()], []

    async def inputs():
        return {"ner": Inputs(specs[-1])}

    async def ner(refs, rows, encoded=None):
        fingerprint = store.get(refs[0]).fingerprint
        seen.append(fingerprint)
        if fingerprint != specs[-1].fingerprint:
            raise TokenizerMismatch(f"tokens from tokenizer {fingerprint}, model needs {specs[-1].fingerprint}")
        return reply(["ner"] * sum(map(len, rows)))

    pipe = wired(inputs, {"ner": ner}, put=store)
    assert asyncio.run(run_batch(pipe, [Item("x", ("ner",))]))[0]["ner"] == "ner"
    specs.append(replace(default_spec(), name="swapped", fingerprint="f" * 16))  # the model is swapped
    (refused,) = asyncio.run(run_batch(pipe, [Item("y", ("ner",))]))
    assert refused["ner"]["error"].startswith("ner failed: TokenizerMismatch")
    (after,) = asyncio.run(run_batch(pipe, [Item("z", ("ner",))]))
    assert after["ner"] == "ner" and seen == [default_spec().fingerprint] * 2 + ["f" * 16]


def _slow(seconds: float):
    async def call(refs, rows):
        await asyncio.sleep(seconds)
        return reply(["slow"] * sum(map(len, rows)), "slow")

    return call


def test_a_deadline_returns_the_finished_tasks_and_marks_the_others():
    store, log = Store(), []
    pipe = make(store, {"sentiment": counting_task(store, log, "sentiment"), "summary": _slow(1.0)})

    async def go():
        now = time.perf_counter()
        hurried = Item("a", ("sentiment", "summary"), now, deadline=now + 0.2)
        patient = Item("b", ("sentiment", "summary"), now)
        first, second = await pipe.start([hurried, patient])  # one batch, one call per task
        out = (await pipe.finish(first)).json()
        return out, time.perf_counter() - now, (await pipe.finish(second)).json()

    hurried, seconds, patient = asyncio.run(go())
    assert seconds < 0.8  # answered at its deadline, not after the 1 s task
    assert hurried["sentiment"] == "sentiment:a"
    missed = "summary was not done by the request's deadline"
    assert hurried["summary"] == {"error": missed, "code": "deadline_exceeded"}
    assert set(hurried["timings"]["tasks"]) == {"sentiment"}
    assert patient["summary"] == "slow"  # the shared call went on for the item that could wait
    assert pipe.stats.tasks["summary"].calls == 1 and pipe.stats.tasks["summary"].deadlines == 1


def test_per_task_timeouts_override_the_default():
    store, log = Store(), []
    pipe = make(store, {"sentiment": counting_task(store, log, "sentiment"), "summary": _slow(1.0)})
    pipe.dispatch.limits = replace(pipe.dispatch.limits, timeouts_s={"summary": 0.1})
    (out,) = asyncio.run(run_batch(pipe, [Item("a", ("sentiment", "summary"))]))
    assert out["summary"] == {"error": "summary timed out after 0.1 s", "code": "timeout"}
    assert out["sentiment"] == "sentiment:a"


def test_a_busy_task_sends_its_waiting_calls_as_one_and_never_holds_up_another():
    store, log = Store(), []
    sent = []

    async def slow(refs, rows):
        sent.append(rows)
        await asyncio.sleep(0.3)
        return reply(["slow"] * sum(map(len, rows)))

    tasks = {"summary": slow, "sentiment": counting_task(store, log, "sentiment")}
    specs = dict.fromkeys(tasks, Inputs(default_spec()))
    pipe = wired(lambda: _specs(specs), tasks, put=store, limits=CallLimits(max_in_flight=1))

    async def go():
        slow_items = [(await pipe.start([Item(f"s{i}", ("summary",))]))[0] for i in range(3)]
        start = time.perf_counter()
        (fast,) = await pipe.start([Item("f", ("sentiment",))])
        fast_out = (await pipe.finish(fast)).json()
        fast_s = time.perf_counter() - start
        return fast_out, fast_s, [a.json() for a in await asyncio.gather(*(pipe.finish(p) for p in slow_items))]

    fast_out, fast_s, slow_out = asyncio.run(go())
    assert fast_out["sentiment"] == "sentiment:f" and fast_s < 0.2  # not behind the busy summarizer
    assert [o["summary"] for o in slow_out] == ["slow"] * 3
    # The first call went at once; the two that waited for its slot went together, as one call.
    assert sent == [[[0]], [[0], [0]]]
    assert pipe.stats.tasks["summary"].calls == 3 and pipe.stats.tasks["summary"].sends == 2


def test_a_slow_call_holds_up_the_calls_behind_it_only_until_it_is_slow():
    """A long text's call lets one more call go once it has run slow_s."""
    store, sent = Store(), []

    async def ner(refs, rows):
        texts = [store.get(ref).texts[i] for ref, rs in zip(refs, rows) for i in rs]
        sent.append((round(time.perf_counter() - began, 2), texts))
        await asyncio.sleep(1.0 if texts == ["long"] else 0.05)
        return reply(texts)

    pipe = wired(
        lambda: _specs({"ner": Inputs(default_spec())}), {"ner": ner}, put=store, limits=CallLimits(slow_s=0.3)
    )

    async def go():
        (long,) = await pipe.start([Item("long", ("ner",))])
        await asyncio.sleep(0.05)
        short = [(await pipe.start([Item(f"s{i}", ("ner",))]))[0] for i in range(2)]
        answers = await asyncio.gather(*(pipe.finish(p) for p in short))
        done = time.perf_counter() - began
        await pipe.finish(long)
        return [a.json()["ner"] for a in answers], done

    began = time.perf_counter()
    answers, done = asyncio.run(go())
    assert answers == ["s0", "s1"] and done < 0.6  # not behind the long call's 1 s
    # The short texts waited for the long call to turn slow (0.3 s), then went together, as one call.
    (t0, first), (t1, second) = sent
    assert first == ["long"] and second == ["s0", "s1"] and 0.25 <= t1 - t0 < 0.45, sent


def test_a_long_request_shares_no_call_with_other_requests():
    """Queued behind a busy stage between short texts, a long request's batch (``alone``) goes in a call of
    its own: joined with them, they would wait for its long work."""
    store, sent = Store(), []

    async def ner(refs, rows):
        texts = [store.get(ref).texts[i] for ref, rs in zip(refs, rows) for i in rs]
        sent.append(texts)
        await asyncio.sleep(0.2 if texts == ["first"] else 0.01)
        return reply(texts)

    pipe = wired(lambda: _specs({"ner": Inputs(default_spec())}), {"ner": ner}, put=store)

    async def go():
        started = await pipe.start([Item("first", ("ner",))])
        await asyncio.sleep(0.05)  # the stage is busy: what comes now waits for its next call
        started += await pipe.start([Item("s0", ("ner",))])
        started += await pipe.start([Item("long", ("ner",))], alone=True)
        started += await pipe.start([Item("s1", ("ner",))])
        return [(await pipe.finish(p)).json()["ner"] for p in started]

    assert asyncio.run(go()) == ["first", "s0", "long", "s1"]
    assert sent == [["first"], ["s0"], ["long"], ["s1"]]  # without alone: ["s0", "long", "s1"] in one call


async def _specs(specs):
    return specs


class Encoding:
    """Stands in for an encoder call on its way (deployments/ingress.py): ``vectors`` is what the heads
    get; here a future of the encoder's answer, as an ObjectRef is in Serve."""

    def __init__(self, rows, seconds=0.01, until: asyncio.Event | None = None):
        async def run_pass():
            await asyncio.sleep(seconds)
            if until:
                await until.wait()
            return {"rows": rows}

        self.vectors = asyncio.ensure_future(run_pass())
        self.cancels = 0

    async def done(self, timeout):
        await asyncio.wait([self.vectors], timeout=timeout)

    def cancel(self):
        self.cancels += 1
        self.vectors.cancel()


HEADS = {"ner": None, "sentiment": "minilm", "summary": "minilm", "encoder": "minilm"}


def graph(store, tasks, encode, **limits):
    inputs = {name: Inputs(default_spec(), encoder) for name, encoder in HEADS.items()}
    return wired(lambda: _specs(inputs), tasks, put=store, encoders={"encoder": encode}, **limits)


def test_heads_of_one_encoder_share_one_encoder_call_per_batch_and_get_its_answer():
    store, log, encodes = Store(), [], []

    async def encode(refs, rows):
        encodes.append((refs, rows))
        return Encoding(rows)

    def head(name):
        async def call(refs, rows, encoded):
            log.append((name, rows, await encoded[0]))  # the replica awaits the encoder's answer itself
            return reply([name] * sum(map(len, rows)))

        return call

    async def ner(refs, rows, encoded=None):
        assert encoded is None  # reads words, not vectors
        return reply(["ner"] * sum(map(len, rows)))

    tasks = {"ner": ner, "sentiment": head("sentiment"), "summary": head("summary")}
    pipe = graph(store, tasks, encode)
    items = [Item("a", ("sentiment",)), Item("b", ("ner",)), Item("c", ("summary", "sentiment"))]
    out = asyncio.run(run_batch(pipe, items))
    assert [sorted(k for k in o if k in tasks) for o in out] == [["sentiment"], ["ner"], ["sentiment", "summary"]]
    assert encodes == [([("ref", 0)], [[0, 2]])]  # one call, the rows any head needs, the ref nested
    assert sorted(log) == [("sentiment", [[0, 2]], {"rows": [[0, 2]]}), ("summary", [[2]], {"rows": [[0, 2]]})]
    assert pipe.stats.tasks["encoder"].sends == 1 and pipe.stats.tasks["encoder"].texts == 2

    # Only NER asked: no encoder call.
    asyncio.run(run_batch(pipe, [Item("d", ("ner",))]))
    assert len(encodes) == 1


def test_a_busy_graph_sends_what_waited_as_one_call_per_deployment_and_an_idle_one_at_once():
    """Batches follow the load: while the encoder and NER work, later batches wait in the ingress, and the
    next call of each takes all of them (the heads ride on the encoder's); an idle graph sends at once."""
    store, sent = Store(), []
    release = asyncio.Event()

    async def encode(refs, rows):
        sent.append(("encoder", rows))
        return Encoding(rows, 0.0)

    def task(name):
        async def call(refs, rows, encoded=None):
            sent.append((name, rows))
            if encoded:
                await encoded[0]
            await release.wait()
            return reply([name] * sum(map(len, rows)))

        return call

    pipe = graph(store, {t: task(t) for t in ("ner", "sentiment", "summary")}, encode, limits=CallLimits(max_texts=4))
    tasks = ("ner", "sentiment", "summary")

    async def go():
        first = await pipe.start([Item("a", tasks)])
        while len(sent) < 4:  # idle: sent at once (the heads once the encoder call is placed)
            await asyncio.sleep(0.001)
        assert sorted(name for name, _ in sent) == ["encoder", "ner", "sentiment", "summary"]
        later = [await pipe.start([Item(t, tasks)]) for t in "bcdef"]  # five batches while the first runs
        await asyncio.sleep(0.05)
        assert len(sent) == 4  # nothing more was sent: each deployment has its one call in flight
        release.set()
        answers = [a.json() for a in await asyncio.gather(*(pipe.finish(p) for b in (first, *later) for p in b))]
        return answers

    answers = asyncio.run(go())
    assert all(a[t] == t for a in answers for t in tasks)
    by = {name: [rows for n, rows in sent if n == name] for name in ("encoder", "ner", "sentiment", "summary")}
    # Each of the five waiting batches had one text: at most 4 texts per call, so calls of 4 and 1.
    assert by["encoder"] == by["ner"] == by["sentiment"] == by["summary"] == [[[0]], [[0]] * 4, [[0]]]
    assert pipe.stats.tasks["encoder"].sends == 3 and pipe.stats.tasks["encoder"].texts == 6
    timing = answers[1]["timings"]["tasks"]["sentiment"]
    assert timing["texts"] == 4 and timing["wait_ms"] > 0 and timing["call_ms"] >= timing["wait_ms"]


def test_the_encoder_runs_its_next_pass_while_the_heads_read_the_last_one():
    """An encoder's slot frees when its pass ends, not when its heads answer: the next batch's pass runs
    while the heads still work on the last one. One such call per slot at most, so heads slower than the
    encoder hold it up instead of falling further behind."""
    store, sent = Store(), []
    release = asyncio.Event()

    async def encode(refs, rows):
        sent.append(rows)
        return Encoding(rows, 0.0)

    async def head(refs, rows, encoded):
        await encoded[0]
        await release.wait()
        return reply(["head"] * sum(map(len, rows)))

    async def ner(refs, rows, encoded=None):
        return reply(["ner"] * sum(map(len, rows)))

    pipe = graph(store, {"ner": ner, "sentiment": head, "summary": head}, encode)

    async def go():
        started = []
        for text in "abc":
            started += await pipe.start([Item(text, ("sentiment",))])
            await asyncio.sleep(0.05)
        passes = len(sent)  # a's and b's; c waits for a's heads
        release.set()
        answers = [(await pipe.finish(p)).json()["sentiment"] for p in started]
        return passes, answers

    passes, answers = asyncio.run(go())
    assert passes == 2 and sent == [[[0]]] * 3
    assert answers == ["head"] * 3


def test_ner_waits_for_the_encoder_to_take_the_same_batches_but_never_long():
    """A batch goes to its deployments together: NER, free again, waits while the Encoder is busy, and then
    both take everything that waited, so their calls are as big; a stuck Encoder holds NER up only
    ``together_s``."""
    store, sent = Store(), []
    release = asyncio.Event()

    async def encode(refs, rows):
        sent.append(("encoder", rows))
        return Encoding(rows, 0.0, until=release)  # its pass runs until release

    async def head(refs, rows, encoded):
        await encoded[0]
        await release.wait()
        return reply(["head"] * sum(map(len, rows)))

    async def ner(refs, rows, encoded=None):
        sent.append(("ner", rows))
        return reply(["ner"] * sum(map(len, rows)))

    tasks = ("ner", "sentiment")
    pipe = graph(store, {"ner": ner, "sentiment": head, "summary": head}, encode)
    pipe.dispatch.limits = replace(pipe.dispatch.limits, together_s=0.3)

    async def go():
        first = await pipe.start([Item("a", tasks)])
        await asyncio.sleep(0.05)  # NER answered "a"; the Encoder's pass runs on
        later = [await pipe.start([Item(t, tasks)]) for t in "bcd"]
        await asyncio.sleep(0.1)
        held = [name for name, _ in sent]  # NER is free but waits for the Encoder to take b, c, d too
        release.set()
        answers = [(await pipe.finish(p)).json() for b in (first, *later) for p in b]
        release.clear()
        start = time.perf_counter()
        stuck = await pipe.start([Item("e", tasks)])  # the Encoder holds its slot (release is not set) ...
        await asyncio.sleep(0.05)
        blocked = await pipe.start([Item("f", tasks)])
        ner_call, k = blocked[0].calls["ner"]
        f_ner = (await ner_call).answers[k]  # ... and NER goes on after together_s, without it
        waited = time.perf_counter() - start
        release.set()
        await asyncio.gather(*(pipe.finish(p) for p in (*stuck, *blocked)))
        return held, answers, f_ner, waited

    held, answers, f_ner, waited = asyncio.run(go())
    assert held == ["ner", "encoder"]
    assert all(a["ner"] == "ner" and a["sentiment"] == "head" for a in answers)
    assert [rows for name, rows in sent if name == "ner"][:2] == [[[0]], [[0], [0], [0]]]
    assert [rows for name, rows in sent if name == "encoder"][:2] == [[[0]], [[0], [0], [0]]]
    assert f_ner == "ner" and 0.3 <= waited < 1.0


def test_a_batch_that_gave_up_never_fails_the_batches_it_shared_a_call_with():
    """Two batches in one encoder call (and so in one call per head): the first one's deadline passes
    while the call runs and it leaves; the call goes on and the other batch gets its answers."""
    store, encodings, releases = Store(), [], [asyncio.Event(), asyncio.Event()]

    async def encode(refs, rows):
        encodings.append(Encoding(rows, 0.0))
        return encodings[-1]

    async def head(refs, rows, encoded):
        await encoded[0]
        await releases[len(encodings) - 1].wait()  # the first call waits for the first release, ...
        return reply(["ok"] * sum(map(len, rows)))

    pipe = graph(store, {"sentiment": head, "summary": head}, encode)

    async def go():
        blocker = await pipe.start([Item("x", ("sentiment",))])  # holds the encoder's one slot
        now = time.perf_counter()
        hurried = await pipe.start([Item("a", ("sentiment",), now, deadline=now + 0.2)])
        patient = await pipe.start([Item("b", ("sentiment", "summary"), now)])
        releases[0].set()  # both waiting batches go in the encoder's next call
        out_hurried = (await pipe.finish(hurried[0])).json()  # and the first leaves while it runs
        assert [rows for e in encodings for rows in [e.vectors.result()["rows"]]] == [[[0]], [[0], [0]]]
        releases[1].set()
        return out_hurried, (await pipe.finish(patient[0])).json(), (await pipe.finish(blocker[0])).json()

    hurried, patient, blocker = asyncio.run(go())
    assert hurried["sentiment"]["code"] == "deadline_exceeded"
    assert patient["sentiment"] == patient["summary"] == blocker["sentiment"] == "ok"
    assert [e.cancels for e in encodings] == [0, 0]


def test_a_head_whose_encoder_nobody_serves_is_unavailable_and_the_others_answer():
    store, log = Store(), []
    spec = default_spec()
    inputs = {"ner": Inputs(spec), "sentiment": Inputs(spec, "minilm"), "encoder": Inputs(spec, "other")}
    tasks = {"ner": counting_task(store, log, "ner"), "sentiment": counting_task(store, log, "sentiment")}
    pipe = wired(lambda: _specs(inputs), tasks, put=store, encoders={"encoder": lambda refs, rows: None})
    (out,) = asyncio.run(run_batch(pipe, [Item("x", ("ner", "sentiment"))]))
    assert out["ner"] == "ner:x"
    assert out["sentiment"]["code"] == "unavailable" and "encoder minilm" in out["sentiment"]["error"]


def test_a_call_that_raises_at_once_frees_its_slot():
    store, calls = Store(), []

    def raises_at_once(refs, rows):  # not a coroutine: fails before anything is awaited
        calls.append(rows)
        raise RuntimeError("no replica")

    specs = {"ner": Inputs(default_spec())}
    pipe = wired(lambda: _specs(specs), {"ner": raises_at_once}, put=store, limits=CallLimits(timeout_s=2.0))
    for text in ("a", "b", "c"):
        (out,) = asyncio.run(run_batch(pipe, [Item(text, ("ner",))]))
        assert out["ner"] == {"error": "ner failed: RuntimeError: no replica", "code": "failed"}
    assert len(calls) == 3 and pipe.dispatch.in_flight("ner") == 0  # every call was sent: no slot leaked


def test_a_task_that_cannot_say_what_it_reads_holds_up_only_itself():
    store, log = Store(), []
    hang = asyncio.Event()

    async def inputs():
        async def ner():
            await asyncio.wait_for(hang.wait(), 0.5)  # as the ingress's per-task timeout

        try:
            await ner()
            answer = Inputs(default_spec())
        except asyncio.TimeoutError as e:
            answer = e
        return {"ner": answer, "sentiment": Inputs(default_spec())}

    tasks = {"ner": counting_task(store, log, "ner"), "sentiment": counting_task(store, log, "sentiment")}
    pipe = wired(inputs, tasks, put=store)

    async def go():
        (first,) = await run_batch(pipe, [Item("a", ("ner", "sentiment"))])  # the first batch waits for the answers
        start = time.perf_counter()
        (second,) = await run_batch(pipe, [Item("b", ("sentiment",))])
        return first, second, time.perf_counter() - start

    first, second, seconds = asyncio.run(go())
    assert first["ner"]["code"] == "unavailable" and first["sentiment"] == "sentiment:a"
    assert second["sentiment"] == "sentiment:b" and seconds < 0.3  # not behind the ner's refresh again
    assert pipe.topology.stale  # and ner is asked again, in the background


def test_a_call_nobody_waits_for_any_more_is_cancelled():
    store, cancelled = Store(), []

    async def slow(refs, rows):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(rows)
            raise

    pipe = wired(lambda: _specs({"summary": Inputs(default_spec())}), {"summary": slow}, put=store)

    async def go():
        now = time.perf_counter()
        items = [Item(t, ("summary",), now, deadline=now + 0.2) for t in "ab"]
        out = [a.json() for a in await asyncio.gather(*(pipe.finish(p) for p in await pipe.start(items)))]
        await asyncio.sleep(0.05)  # the cancel reaches the remote call
        return out, time.perf_counter() - now

    out, seconds = asyncio.run(go())
    assert [o["summary"]["code"] for o in out] == ["deadline_exceeded"] * 2 and seconds < 1
    assert cancelled == [[[0, 1]]]  # both items gave up: the one remote call they shared was stopped
    assert pipe.stats.tasks["summary"].abandoned == 1 and pipe.stats.tasks["summary"].cancelled == 1
    assert not pipe.wanted and pipe.dispatch.in_flight("summary") == 0


@pytest.mark.parametrize("head_s,cancels", [(0.0, 0), (5.0, 1)], ids=["heads answered", "heads timed out"])
def test_an_encoder_call_is_cancelled_once_no_head_waits_for_it(head_s, cancels):
    encodings = []

    async def encode(refs, rows):
        encodings.append(Encoding(rows))
        return encodings[-1]

    async def head(refs, rows, encoded):
        await asyncio.sleep(head_s)
        return reply(["ok"] * sum(map(len, rows)), "h")

    pipe = graph(Store(), {"sentiment": head, "summary": head}, encode)
    pipe.dispatch.limits = replace(pipe.dispatch.limits, timeout_s=0.2)
    (out,) = asyncio.run(run_batch(pipe, [Item("a", ("sentiment", "summary"))]))
    assert [out[t] == "ok" for t in ("sentiment", "summary")] == [head_s == 0] * 2
    assert [e.cancels for e in encodings] == [cancels]
