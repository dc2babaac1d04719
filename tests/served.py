"""What Serve runs a config's deployments with: each one's ``@serve.deployment`` options
(deployments/*.py), then what the config sets; a config's ``ray_actor_options`` replaces the
decorator's as a whole, as Serve applies it."""

import inspect

import graph

# The deployments graph.py wires: the Ingress and the defaults of build()'s parameters.
WIRED = (graph.Ingress, *(p.default for p in inspect.signature(graph.build).parameters.values()))
DECORATED = {d.name: d for d in WIRED}


def replica_options(config: dict) -> dict[str, dict]:
    """Per deployment: CPUs per replica, the most replicas it may run, and the Ingress's overload bounds."""
    out = {}
    for app in config["applications"]:
        for d in app["deployments"]:
            code = DECORATED[d["name"]]
            actor = d.get("ray_actor_options", code.ray_actor_options)
            scaling = d.get("autoscaling_config")
            backpressure = d.get("backpressure_config", {})
            out[d["name"]] = {
                "num_cpus": actor.get("num_cpus", 1),
                "replicas": scaling["max_replicas"] if scaling else d.get("num_replicas", code.num_replicas),
                "max_queued_requests": d.get("max_queued_requests", code.max_queued_requests),
                "retry_after_s": backpressure.get("retry_after_s", code.backpressure_config.retry_after_s),
            }
    return out
