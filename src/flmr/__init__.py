"""flmr: Fine-grained Late-interaction Multi-modal Retrieval."""

__version__ = "0.1.0"
