"""Wiring only: the Serve application of the tokenizer ingress and the three task deployments."""

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.ner import NER
from deployments.sentiment import Sentiment
from deployments.summarize import Summarize


def build(ner=NER, sentiment=Sentiment, summary=Summarize) -> Application:
    return Ingress.bind(ner.bind(), sentiment.bind(), summary.bind())


app = build()
