"""The 'separate services' baseline: one HTTP service per task, each tokenizing (and, for
sentiment and summary, encoding) for itself with the same kernels as the graph, and a thin
gateway that calls the three in parallel. No Ray.

Each service runs at most ``--max-concurrency`` model calls at once (by default one per core), as a
competent deployment would: more clients queue instead of thrashing 40 threads on two cores. Its encoder
runs on ``--encoder-threads`` threads (by default the graph's Encoder's).

    python -m bench.services ner --port 8101 [--max-concurrency 2]   # or sentiment, summary
    python -m bench.services gateway --port 8100 --ner http://127.0.0.1:8101 ...
"""

from __future__ import annotations

import argparse
import asyncio
import os

import httpx
import torch
import uvicorn
from fastapi import FastAPI

from nlpserve.schemas import TASKS, AnalyzeRequest, BatchRequest, EncoderSettings
from nlpserve.tokens import Tokenizer


def task_app(task: str, max_concurrency: int, encoder_threads: int) -> FastAPI:
    from nlpserve.models.encoder import MiniLMEncoder
    from nlpserve.models.ner import SpacyNER
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summary import ExtractiveSummarizer

    model = {"ner": SpacyNER, "sentiment": SentimentModel, "summary": ExtractiveSummarizer}[task]()
    # Each encodes for itself; a service's call is one text, so its threads all go to its window.
    encoder = MiniLMEncoder(threads=encoder_threads, window_threads=encoder_threads) if model.encoder else None
    tokenizer = Tokenizer()
    app = FastAPI()
    slots = asyncio.Semaphore(max_concurrency)

    def answer(texts: list[str]) -> list:
        batch = tokenizer(texts)
        rows = list(range(len(batch)))
        if encoder is None:
            return model(batch, rows)
        (encoded,) = encoder.encode([(batch, rows)])
        return model(batch, rows, [encoded.row(i) for i in rows])

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/run")
    async def run(body: dict) -> list:
        async with slots:  # the others wait here, not in threads fighting for the cores
            return await asyncio.to_thread(answer, body["texts"])

    return app


def gateway_app(urls: dict[str, str]) -> FastAPI:
    app = FastAPI()
    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256))

    async def fan_out(texts: list[str], tasks: list[str]) -> list[dict]:
        answers = await asyncio.gather(*(client.post(urls[t] + "/run", json={"texts": texts}) for t in tasks))
        out: list[dict] = [{} for _ in texts]
        for task, answer in zip(tasks, answers):
            for i, r in enumerate(answer.raise_for_status().json()):
                out[i][task] = r
        return out

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/analyze")
    async def analyze(body: AnalyzeRequest) -> dict:
        return (await fan_out([body.text], body.tasks))[0]

    @app.post("/analyze/batch")
    async def analyze_batch(body: BatchRequest) -> dict:
        return {"results": await fan_out(body.texts, body.tasks)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=[*TASKS, "gateway"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-concurrency", type=int, default=os.cpu_count() or 1, help="model calls at once")
    parser.add_argument("--encoder-threads", type=int, default=EncoderSettings().torch_threads)
    for task in TASKS:
        parser.add_argument(f"--{task}", help=f"{task} service URL (gateway only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.role == "gateway":
        app = gateway_app({t: getattr(args, t) for t in TASKS})
    else:
        app = task_app(args.role, args.max_concurrency, args.encoder_threads)
    # Idle connections outlive the gateway's (httpx drops its own after 5 s, uvicorn's default here too): the
    # gateway never sends on one the service is closing (an httpx ReadError, a lost request, in python -m bench).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", timeout_keep_alive=30)


if __name__ == "__main__":
    main()
