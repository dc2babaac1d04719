"""Wiring only: the Serve application of the tokenizer ingress, the shared encoder and the three
task deployments."""

from ray.serve import Application

from deployments.encoder import Encoder
from deployments.ingress import Ingress
from deployments.ner import NER
from deployments.sentiment import Sentiment
from deployments.summary import Summary


def build(ner=NER, sentiment=Sentiment, summary=Summary, encoder=Encoder) -> Application:
    return Ingress.bind(ner.bind(), sentiment.bind(), summary.bind(), encoder.bind())


app = build()
