from ray import serve

from deployments import HEALTH_CHECK_PERIOD_S
from deployments.base import TaskReplica


# On a GPU node give it num_gpus (ray_actor_options in the config): the replica then runs on CUDA.
@serve.deployment(
    name="NER", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8, health_check_period_s=HEALTH_CHECK_PERIOD_S
)
class NER(TaskReplica):
    task = "ner"
    # Two parses at once, each on its own model (a transformers model is then held twice): a long text's
    # parse (seconds for 16k tokens) does not hold up the calls sent beside it once it turns slow
    # (IngressSettings.slow_call_s).
    passes = 2
