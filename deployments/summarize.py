from ray import serve

from deployments.base import TaskReplica
from nlpserve.hf import Seq2SeqSummarizer
from nlpserve.schemas import SummarySettings
from nlpserve.summarize import ExtractiveSummarizer


@serve.deployment(name="Summarize", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class Summarize(TaskReplica):
    settings = SummarySettings

    def load(self, settings: SummarySettings) -> ExtractiveSummarizer | Seq2SeqSummarizer:
        if settings.backend == "transformers":
            return Seq2SeqSummarizer("summary", settings.model, settings.window, settings.stride)
        return ExtractiveSummarizer()

    def apply(self, settings: SummarySettings) -> None:
        keys = ("max_length", "min_length", "num_beams")
        if settings.backend == "transformers":
            self.model.generation = {key: getattr(settings, key) for key in keys}
            return
        for key in ("ratio", "max_sentences", "max_chars", "redundancy", "lead_prior"):
            setattr(self.model, key, getattr(settings, key))
