"""Locust users for the /analyze API: single calls with all tasks or a subset, batch calls, and
about one text in five repeated (the rest are new, so caches do not flatter the numbers).

Headless run against a running service (`serve run config/config.yaml`):

    locust -f load_tests/locustfile.py --headless -u 8 -r 4 -t 60s \
        --host http://127.0.0.1:8000 --csv load_tests/results/run --html load_tests/results/run.html
"""

import random

from locust import HttpUser, between, task

NEWS = [
    "Apple Inc. reported record quarterly revenue on Thursday, driven by strong iPhone sales in China. "
    "Chief executive Tim Cook said the company expects growth to continue next year, even as supply "
    "problems linger. Analysts at Goldman Sachs in New York had expected revenue of $90 billion. "
    "Shares of Apple rose 3% in after-hours trading on the Nasdaq.",
    "The European Central Bank left interest rates unchanged on Wednesday, but President Christine "
    "Lagarde warned that inflation in the euro zone would stay high for longer than expected. "
    "Economists in Frankfurt said a cut before June now looks unlikely. Markets in Paris and Milan fell "
    "slightly after the announcement, while the euro gained against the dollar.",
    "Heavy rain flooded parts of Houston on Monday, closing schools and stranding drivers on several "
    "highways. The National Weather Service said more storms were likely through Tuesday. Mayor John "
    "Whitmire urged residents to stay home, and the Red Cross opened three shelters across the city.",
    "I bought this blender last month and it is fantastic. It crushes ice in seconds, it is quiet, and "
    "cleaning it takes a minute. Customer service from Vitamix answered my question the same day. "
    "Honestly the best kitchen purchase I have made in years.",
    "The hotel was a disaster. Our room at the Hilton in Chicago smelled of smoke, the air conditioning "
    "was broken, and nobody at the front desk seemed to care. We checked out a day early and are still "
    "waiting for a refund.",
]
TASK_SETS = [["ner", "sentiment", "summary"], ["sentiment"], ["ner"], ["ner", "sentiment"]]
REPEATED = 0.2  # share of requests that repeat a text seen before (the rest are new texts)


def text() -> str:
    base = random.choice(NEWS)
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
        texts = [text() for _ in range(random.randint(2, len(NEWS)))]
        self.client.post("/analyze/batch", json={"texts": texts}, name="/analyze/batch")
