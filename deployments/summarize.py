from ray import serve

from deployments.base import TaskReplica


@serve.deployment(name="Summarize", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=8)
class Summarize(TaskReplica):
    task = "summary"
