"""Multi-task NLP on Ray Serve: tokenize once, fan out NER, sentiment and summarization."""
