from ray import serve

from deployments import HEALTH_CHECK_PERIOD_S
from deployments.base import TaskReplica


@serve.deployment(
    name="Summary",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=8,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class Summary(TaskReplica):
    task = "summary"
