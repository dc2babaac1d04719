"""The 'separate services' baseline: one HTTP service per task, each tokenizing (and, for
sentiment and summary, encoding) for itself with the same kernels as the graph, and a thin
gateway that calls the three in parallel. No Ray.

    python -m bench.services ner --port 8101         # or sentiment, summary
    python -m bench.services gateway --port 8100 --ner http://127.0.0.1:8101 ...
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import torch
import uvicorn
from fastapi import FastAPI

from nlpserve.schemas import TASKS, AnalyzeRequest, BatchRequest
from nlpserve.tokens import Tokenizer


def task_app(task: str) -> FastAPI:
    from nlpserve.models.encoder import Encoder
    from nlpserve.models.ner import SpacyNER
    from nlpserve.models.sentiment import SentimentModel
    from nlpserve.models.summarize import ExtractiveSummarizer

    model = {"ner": SpacyNER, "sentiment": SentimentModel, "summary": ExtractiveSummarizer}[task]()
    encoder = Encoder() if model.encoder else None  # a service of its own encodes for itself
    tokenizer = Tokenizer()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/run")
    def run(body: dict) -> list:
        batch = tokenizer(body["texts"])
        rows = list(range(len(batch)))
        if encoder is None:
            return model(batch, rows)
        (encoded,) = encoder.encode([(batch, rows)])
        return model(batch, rows, [encoded.row(i) for i in rows])

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
    for task in TASKS:
        parser.add_argument(f"--{task}", help=f"{task} service URL (gateway only)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    app = gateway_app({t: getattr(args, t) for t in TASKS}) if args.role == "gateway" else task_app(args.role)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
