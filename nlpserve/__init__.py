"""Multi-task NLP on Ray Serve: tokenize once, fan out NER, sentiment and summarization."""

# Only the HTTP client is imported here (httpx, tenacity): importing the package must not load Ray or torch.
from nlpserve.client import AsyncClient, Client, ServiceError

__all__ = ["AsyncClient", "Client", "ServiceError"]
