from ray import serve

from deployments.base import TaskReplica
from nlpserve.schemas import SentimentSettings
from nlpserve.sentiment import SentimentModel


@serve.deployment(name="Sentiment")
class Sentiment(TaskReplica):
    settings = SentimentSettings

    def load(self) -> SentimentModel:
        return SentimentModel()
