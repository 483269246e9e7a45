"""Synthetic clustered token embeddings for speed and scale benchmarks.

Each document draws a few topics; its token vectors are noisy copies of its topics' directions, so
documents share neighbourhoods like real token embeddings do. Queries are drawn like a random document. Everything is generated chunk by chunk from per-chunk seeds, so a
collection larger than RAM can be streamed into the index writer and regenerated identically.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from flmr.index import DocumentChunk

NUM_TOPICS = 4096
TOPICS_PER_DOCUMENT = 6
TOKEN_NOISE = 0.35  # relative norm of the noise added to a topic direction


class SyntheticCollection:
    """A reproducible clustered collection of ``num_documents`` documents of about ``mean_length`` vectors.

    Example:
        >>> collection = SyntheticCollection(1000, mean_length=20, dim=16)
        >>> chunk = next(collection.chunks(docs_per_chunk=100))
        >>> chunk.embeddings.shape[1], chunk.num_documents
        (16, 100)
    """

    def __init__(self, num_documents: int, mean_length: int = 60, dim: int = 128, seed: int = 0) -> None:
        self.num_documents = num_documents
        self.mean_length = mean_length
        self.dim = dim
        self.seed = seed
        generator = torch.Generator().manual_seed(seed)
        self.topics = torch.nn.functional.normalize(torch.randn(NUM_TOPICS, dim, generator=generator), dim=-1)

    def document_topics(self, pids: torch.Tensor) -> torch.Tensor:
        """(len(pids), TOPICS_PER_DOCUMENT) topic ids of documents, a hash of (seed, pid) so any pid's can be recomputed."""
        mixed = (
            pids[:, None] * TOPICS_PER_DOCUMENT + torch.arange(TOPICS_PER_DOCUMENT) + self.seed * 1_000_003
        )
        for _ in range(2):  # integer hash rounds (avalanche of the 32 low bits)
            mixed = ((mixed ^ (mixed >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
        return (mixed ^ (mixed >> 16)) % NUM_TOPICS

    def tokens(self, topics: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Token vectors laid end to end: each a noisy copy of one of its owner's topics (rows of ``topics``)."""
        owner = torch.arange(topics.shape[0]).repeat_interleave(lengths)
        token_topic = torch.randint(0, TOPICS_PER_DOCUMENT, (owner.shape[0],), generator=generator)
        directions = self.topics[topics[owner, token_topic]]
        noise = torch.randn(directions.shape, generator=generator) * (TOKEN_NOISE / self.dim**0.5)
        return torch.nn.functional.normalize(directions + noise, dim=-1)

    def chunk(self, first_pid: int, count: int) -> DocumentChunk:
        """Documents first_pid..first_pid+count-1 (always the same for the same pids and chunking)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + first_pid)
        spread = self.mean_length // 3
        doclens = torch.randint(
            self.mean_length - spread, self.mean_length + spread + 1, (count,), generator=generator
        )
        topics = self.document_topics(torch.arange(first_pid, first_pid + count))
        return DocumentChunk(self.tokens(topics, doclens, generator), doclens)

    def chunks(self, docs_per_chunk: int = 10_000) -> Iterator[DocumentChunk]:
        for first_pid in range(0, self.num_documents, docs_per_chunk):
            yield self.chunk(first_pid, min(docs_per_chunk, self.num_documents - first_pid))

    def queries(self, num_queries: int, length: int = 32, seed: int = 1) -> torch.Tensor:
        """(num_queries, length, dim) queries, each drawn like a random document of the collection.

        Its source document and those sharing its topics score highest, as a relevant document would.
        """
        generator = torch.Generator().manual_seed(seed)
        sources = torch.randint(0, self.num_documents, (num_queries,), generator=generator)
        vectors = self.tokens(self.document_topics(sources), torch.full((num_queries,), length), generator)
        return vectors.view(num_queries, length, self.dim)
