"""The Serve deployments. Each one's options (CPUs, queue bounds, health checks) are in its
``@serve.deployment`` decorator, sized for a 2-core machine; a config in config/ sets only what differs."""

# A dead replica is found by its failed health check every 2 s rather than Serve's 10 s.
HEALTH_CHECK_PERIOD_S = 2.0
