from ray import serve

from deployments.base import TaskReplica


@serve.deployment(name="NER", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class NER(TaskReplica):
    task = "ner"
