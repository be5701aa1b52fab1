"""batchgate: a self-hosted gateway for bulk LLM work."""

__version__ = "0.1.0"
