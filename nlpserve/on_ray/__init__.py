"""The only part of nlpserve that imports Ray: start a config on a local Ray (local), bulk runs on Ray
Data (bulk). The rest of nlpserve runs without it; deployments/ holds the Serve deployments."""
