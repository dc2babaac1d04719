from ray import serve

from deployments.base import TaskReplica
from nlpserve.hf import SequenceClassifier
from nlpserve.schemas import SentimentSettings
from nlpserve.sentiment import SentimentModel


@serve.deployment(name="Sentiment", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Sentiment(TaskReplica):
    settings = SentimentSettings

    def load(self, settings: SentimentSettings) -> SentimentModel | SequenceClassifier:
        if settings.backend == "transformers":
            return SequenceClassifier("sentiment", settings.model, settings.window, settings.stride)
        return SentimentModel()
