from ray import serve

from deployments.base import TaskReplica
from nlpserve.hf import TokenClassifier
from nlpserve.ner import SpacyNER
from nlpserve.schemas import NERSettings


@serve.deployment(name="NER", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class NER(TaskReplica):
    settings = NERSettings

    def load(self, settings: NERSettings) -> SpacyNER | TokenClassifier:
        if settings.backend == "transformers":
            return TokenClassifier("ner", settings.model, settings.window, settings.stride)
        return SpacyNER(settings.model, settings.kernel)
