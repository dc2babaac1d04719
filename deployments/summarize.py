from ray import serve

from deployments.base import TaskReplica
from nlpserve.schemas import SummarySettings
from nlpserve.summarize import ExtractiveSummarizer


@serve.deployment(name="Summarize", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Summarize(TaskReplica):
    settings = SummarySettings

    def load(self) -> ExtractiveSummarizer:
        return ExtractiveSummarizer()

    def apply(self, settings: SummarySettings) -> None:
        self.model.encoder.set_int8(settings.int8)
        for key in ("ratio", "max_sentences", "max_chars", "redundancy"):
            setattr(self.model, key, getattr(settings, key))
