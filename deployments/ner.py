from ray import serve

from deployments.base import TaskReplica
from nlpserve.ner import SpacyNER
from nlpserve.schemas import NERSettings


@serve.deployment(name="NER")
class NER(TaskReplica):
    settings = NERSettings

    def load(self) -> SpacyNER:
        return SpacyNER()
