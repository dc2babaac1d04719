"""`nlpserve analyze --engine ray-data`: a whole file through the task models on Ray Data, no service.

The driver reads the input (JSONL, or Parquet with a "text" and optionally an "id" column), checks each
line as the HTTP CLI does (``jsonl.parse``) and skips the lines a previous run finished (``jsonl.done_lines``).
The good lines go through one ``map_batches`` stage per compute unit, each a fixed pool of actors:

    tokenize ─► NER ─► encode (the shared MiniLM) ─► heads (sentiment and summary read its vectors)

so a text is tokenized once and encoded once, as in the Serve graph, by the same model classes with the
same settings (the defaults of nlpserve.schemas, which the Serve deployments use). Ray Data hands a stage
a batch as a dict of numpy arrays, one entry per row; the token arrays are ragged, so each row carries its
own ids, offsets and word ids (and, after the encoder, its [tokens + 2, dim] vectors), and each stage
rebuilds the flat TokenBatch its model takes. Answers stream back to the driver, which appends them to the
output as they come: JSONL lines in the HTTP CLI's shape, or Parquet rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from nlpserve.jsonl import Line, done_lines, error_record, numbered, read
from nlpserve.models import SETTINGS, build, build_encoder, model_entry
from nlpserve.on_ray.local import app_env
from nlpserve.schemas import (
    TASKS,
    EncoderSettings,
    IngressSettings,
    NERSettings,
    SentimentSettings,
)
from nlpserve.tokens import TokenBatch, Tokenizer

BATCH = 32  # texts per stage call: ~5 MB of vectors, and a kill loses at most a few batches of work
ROW_GROUP = 1024  # Parquet rows per row group
# CPU milliseconds per text of each stage (one thread, the benchmark's 107-token news paragraphs): the
# stages share the CPUs in these proportions, so the slowest one is not starved by the others.
CPU_MS = {"tokenize": 0.25, "ner": 7.8, "encode": 12.0, "heads": 0.4}


def _column(values: list) -> np.ndarray:
    """A column of one object per row: Ray Data keeps arrays of different shapes as a ragged tensor column."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        out[i] = v
    return out


def _per_row(flat: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """A flat array (of a TokenBatch or an EncodedBatch) cut into one array per row at ``splits``."""
    return _column([flat[a:b] for a, b in zip(splits[:-1].tolist(), splits[1:].tolist())])


def _tokens(batch: dict[str, np.ndarray], tokenizer: Tokenizer) -> TokenBatch:
    """The TokenBatch of a batch whose rows carry their own token arrays (from the tokenize stage)."""
    splits = np.zeros(len(batch["ids"]) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in batch["ids"]], out=splits[1:])
    return TokenBatch(
        texts=[str(t) for t in batch["text"]],
        ids=np.concatenate(list(batch["ids"])),
        offsets=np.concatenate(list(batch["offsets"])),
        word_ids=np.concatenate(list(batch["word_ids"])),
        splits=splits,
        prefix=tokenizer.prefix,
        suffix=tokenizer.suffix,
        pad_id=tokenizer.spec.pad_id,
        fingerprint=tokenizer.spec.fingerprint,
    )


def _answers(task: str, results: list, info: dict) -> dict[str, np.ndarray]:
    """A task's answers and the model that made them, as JSON text (one Arrow type whatever the answer)."""
    return {
        task: _column([json.dumps(r) for r in results]),
        f"{task}_model": _column([json.dumps(info)] * len(results)),
    }


class Stage:
    """A ``map_batches`` stage: adds its columns to each batch and returns the columns in ``keep`` (all
    by default; the last stage keeps only the output's, as a separate projection costs a task per block).
    Models are imported in the actors: the driver never runs one."""

    def __init__(self, keep: list[str] | None = None) -> None:
        self.keep = keep
        self.tokenizer = Tokenizer()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = batch | self.add(batch)
        return out if self.keep is None else {k: out[k] for k in self.keep}

    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


class Tokenize(Stage):
    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = self.tokenizer([str(t) for t in batch["text"]])
        return {
            "ids": _per_row(tokens.ids, tokens.splits),
            "offsets": _per_row(tokens.offsets, tokens.splits),
            "word_ids": _per_row(tokens.word_ids, tokens.splits),
        }


class NER(Stage):
    def __init__(self, keep: list[str] | None = None) -> None:
        super().__init__(keep)
        settings = NERSettings()
        self.model = build("ner", settings)
        self.info = model_entry(self.model, settings, "cpu")

    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = _tokens(batch, self.tokenizer)
        return _answers("ner", self.model(tokens, list(range(len(tokens)))), self.info)


class Encode(Stage):
    def __init__(self, keep: list[str] | None = None) -> None:
        super().__init__(keep)
        self.model = build_encoder(EncoderSettings())

    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = _tokens(batch, self.tokenizer)
        (encoded,) = self.model.encode([(tokens, list(range(len(tokens))))])
        return {"vectors": _per_row(encoded.vectors, encoded.splits)}


class Heads(Stage):
    """Sentiment and summary, the small heads that read the encoder's vectors."""

    def __init__(self, tasks: list[str], keep: list[str] | None = None) -> None:
        import torch

        super().__init__(keep)
        kernel = EncoderSettings().kernel  # the heads' answers depend on the kernel that made the vectors
        self.models = {}  # task -> (model, its info)
        for task in ("sentiment", "summary"):
            if task in tasks:
                settings = SETTINGS[task]()
                model = build(task, settings)
                self.models[task] = (model, {**model_entry(model, settings, "cpu"), "encoder": kernel})
        torch.set_num_threads(SentimentSettings().torch_threads)  # the sentiment head is the torch model

    def add(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = _tokens(batch, self.tokenizer)
        rows, vectors = list(range(len(tokens))), list(batch["vectors"])
        out = {}
        for task, (model, info) in self.models.items():
            out |= _answers(task, model(tokens, rows, vectors), info)
        return out


def stages(tasks: list[str]) -> list[tuple[str, type[Stage], dict]]:
    """(name, class, constructor kwargs) of the stages ``tasks`` need, in order; the last keeps only the
    output's columns: line, id (JSON text) and per task its answer and model (JSON text)."""
    out: list[tuple[str, type[Stage], dict]] = [("tokenize", Tokenize, {})]
    if "ner" in tasks:
        out.append(("ner", NER, {}))
    if {"sentiment", "summary"} & set(tasks):
        out += [("encode", Encode, {}), ("heads", Heads, {"tasks": tasks})]
    out[-1][2]["keep"] = ["line", "id", *tasks, *(f"{t}_model" for t in tasks)]
    return out


def plan(names: list[str], cpus: float) -> dict[str, tuple[int, float]]:
    """Per stage, (actors, CPUs per actor): its share of ``cpus`` by CPU_MS, on as many one-thread
    actors as that share has CPUs (at least one)."""
    total = sum(CPU_MS[n] for n in names)
    out = {}
    for name in names:
        share = cpus * CPU_MS[name] / total
        actors = max(1, math.ceil(share))
        out[name] = (actors, share / actors)
    return out


def pipeline(lines: list[Line], tasks: list[str]) -> ray.data.Dataset:
    """The dataset of the answers to ``lines`` (see ``stages``)."""
    rows = pa.table(
        {
            "line": pa.array([x.number for x in lines], pa.int64()),
            "id": pa.array([json.dumps(x.id) for x in lines], pa.string()),
            "text": pa.array([x.text for x in lines], pa.string()),
        }
    )
    # One block per batch: a stage's task answers one block, so results stream from the first batch on.
    ds = ray.data.from_arrow([rows.slice(i, BATCH) for i in range(0, len(rows), BATCH)])
    chain = stages(tasks)
    sizes = plan([name for name, _, _ in chain], ray.cluster_resources()["CPU"])
    for name, cls, kwargs in chain:
        actors, cpus = sizes[name]
        ds = ds.map_batches(
            cls,
            fn_constructor_kwargs=kwargs,
            batch_size=BATCH,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus,
            udf_modifying_row_count=False,
        )
    return ds


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line of a JSONL file; of a Parquet file, each row's "id" and "text" as a
    JSON object, numbered from 1, so both go through ``jsonl.parse``."""
    if path.suffix != ".parquet":
        yield from numbered(path)
        return
    file = pq.ParquetFile(path)
    names = file.schema_arrow.names
    if "text" not in names:
        raise ValueError(f'{path} has no "text" column')
    number = 0
    for batch in file.iter_batches(columns=[c for c in ("id", "text") if c in names]):
        for row in batch.to_pylist():
            number += 1
            yield number, json.dumps(row, default=str).encode()


def read_input(path: Path, done: set[int], max_chars: int) -> tuple[list[Line], list[tuple[int, str]]]:
    """The lines to analyze, and the bad ones as (number, why); lines in ``done`` are skipped. A text over
    ``max_chars`` is bad, as the service refuses it."""
    good, bad = read(_raw_lines(path), done)
    lines = [x for x in good if len(x.text) <= max_chars]
    bad += [
        (x.number, f"text is {len(x.text)} characters; the limit is {max_chars} (max_text_chars)")
        for x in good
        if len(x.text) > max_chars
    ]
    return lines, bad


_MODEL = pa.struct([(k, pa.string()) for k in ("name", "version", "checksum", "device", "settings", "encoder")])
_SPAN = pa.struct([("start", pa.int64()), ("end", pa.int64())])
ANSWER_TYPES = {
    "ner": pa.list_(
        pa.struct(
            [
                ("entity_group", pa.string()),
                ("score", pa.float64()),
                ("word", pa.string()),
                ("start", pa.int64()),
                ("end", pa.int64()),
            ]
        )
    ),
    "sentiment": pa.struct([("label", pa.string()), ("score", pa.float64())]),
    "summary": pa.struct([("summary_text", pa.string()), ("sentences", pa.list_(_SPAN))]),
}


def parquet_schema(tasks: list[str]) -> pa.Schema:
    """The output row: line, id (a string id as it is, any other as its JSON), the answers in their
    /analyze shapes, and per task its model."""
    return pa.schema(
        [
            ("line", pa.int64()),
            ("id", pa.string()),
            *[(t, ANSWER_TYPES[t]) for t in tasks],
            ("models", pa.struct([(t, _MODEL) for t in tasks])),
        ]
    )


Write = Callable[[list[dict]], None]


@contextmanager
def _jsonl(path: Path) -> Iterator[Write]:
    with open(path, "a") as f:

        def write(records: list[dict]) -> None:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()

        yield write


@contextmanager
def _parquet(path: Path, tasks: list[str]) -> Iterator[Write]:
    """Parquet files cannot be appended to: a new file gets the rows ``path`` held, then the new ones,
    and replaces ``path`` at the end, also after an error or Ctrl-C. A kill leaves ``path`` as it was."""
    schema = parquet_schema(tasks)
    if path.exists() and not pq.read_schema(path).equals(schema):
        raise ValueError(f"{path} has other columns than this run writes (other --tasks?)")
    tmp = path.with_name(path.name + ".tmp")
    writer = pq.ParquetWriter(tmp, schema)
    pending: list[dict] = []

    def flush() -> None:
        writer.write_table(pa.Table.from_pylist(pending, schema))
        pending.clear()

    def write(records: list[dict]) -> None:
        pending.extend(r | {"id": r["id"] if isinstance(r["id"], str) else json.dumps(r["id"])} for r in records)
        if len(pending) >= ROW_GROUP:
            flush()

    try:
        if path.exists():
            for batch in pq.ParquetFile(path).iter_batches():
                writer.write_batch(batch)
        yield write
    finally:
        if pending:
            flush()
        writer.close()
        tmp.replace(path)


def _written(path: Path) -> set[int]:
    """Line numbers in the output."""
    if path.suffix != ".parquet":
        return done_lines(path)
    return set(pq.read_table(path, columns=["line"])["line"].to_pylist()) if path.exists() else set()


def _record(row: dict, tasks: list[str]) -> dict:
    """An output row as the HTTP CLI writes it: line, id, the answers, the models that made them."""
    return {
        "line": row["line"],
        "id": json.loads(row["id"]),
        **{t: json.loads(row[t]) for t in tasks},
        "models": {t: json.loads(row[f"{t}_model"]) for t in tasks},
    }


@contextmanager
def _ray(address: str | None) -> Iterator[None]:
    """The Ray this process is connected to (left running), else ``ray.init(address)`` for the run."""
    if ray.is_initialized():
        yield
        return
    os.environ.setdefault("RAY_worker_niceness", "0")  # as nlpserve.on_ray.local: workers at normal priority
    # The models' processes run as the served default's (config/config.yaml's runtime_env): offline.
    ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": app_env()})
    try:
        yield
    finally:
        ray.shutdown()


def run(args: argparse.Namespace) -> dict:
    """Analyze ``args.input`` into ``args.output`` (Parquet if it ends in .parquet, else JSONL); bad lines
    go to ``args.errors``. Returns the counts the CLI prints."""
    tasks = [t for t in TASKS if t in args.tasks]
    done = _written(args.output) | done_lines(args.errors)
    lines, bad = read_input(args.input, done, IngressSettings().max_text_chars)
    with open(args.errors, "a") as errors:
        errors.write("".join(error_record(n, why) for n, why in bad))
    ok = 0
    if lines:
        out = _parquet(args.output, tasks) if args.output.suffix == ".parquet" else _jsonl(args.output)
        with _ray(args.address), out as write:
            ray.data.DataContext.get_current().enable_progress_bars = not args.quiet
            for batch in pipeline(lines, tasks).iter_batches(batch_size=None, batch_format="pyarrow"):
                records = [_record(row, tasks) for row in batch.to_pylist()]
                write(records)
                ok += len(records)
    return {"skipped": len(done), "ok": ok, "failed": len(bad), "retry": 0}
