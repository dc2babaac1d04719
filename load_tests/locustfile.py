"""Locust users for the /analyze API: single calls with all tasks or a subset, batch calls, and
about one text in five repeated (the rest are new, so caches do not flatter the numbers). The texts
are the benchmark's (bench/texts.py).

Headless run from the project root against a running service (`serve run config/config.yaml`):

    locust -f load_tests/locustfile.py --headless -u 8 -r 4 -t 60s \
        --host http://127.0.0.1:8000 --csv /tmp/locust/run --html /tmp/locust/run.html
"""

import random
import sys
from pathlib import Path

from locust import HttpUser, between, task

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root: bench is not installed
from bench.texts import PARAGRAPHS  # noqa: E402

TASK_SETS = [["ner", "sentiment", "summary"], ["sentiment"], ["ner"], ["ner", "sentiment"]]
REPEATED = 0.2  # share of requests that repeat a text seen before (the rest are new texts)


def text() -> str:
    base = random.choice(PARAGRAPHS)
    if random.random() < REPEATED:
        return base
    return f"{base} (Ref. {random.randrange(10**9)}.)"


class AnalyzeUser(HttpUser):
    wait_time = between(0.05, 0.3)

    @task(6)
    def analyze_all(self) -> None:
        self.client.post("/analyze", json={"text": text()}, name="/analyze (all tasks)")

    @task(3)
    def analyze_subset(self) -> None:
        body = {"text": text(), "tasks": random.choice(TASK_SETS)}
        self.client.post("/analyze", json=body, name="/analyze (subset)")

    @task(1)
    def analyze_batch(self) -> None:
        texts = [text() for _ in range(random.randint(2, 6))]
        self.client.post("/analyze/batch", json={"texts": texts}, name="/analyze/batch")
