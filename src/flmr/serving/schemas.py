"""Request and response bodies of the search service (they make its OpenAPI schema)."""

from typing import Any

from pydantic import BaseModel, Field

EXAMPLE_QUERY = "Which text editor runs in a terminal?"


class SearchRequest(BaseModel):
    """A text query, optionally with an image given as base64 (or a ``data:image/...;base64,`` URL)."""

    query: str = Field(description="the question", examples=[EXAMPLE_QUERY])
    k: int | None = Field(default=None, description="how many results (default: the service's default_k)")
    image_base64: str | None = Field(
        default=None, description="an image (JPEG, PNG, GIF, WEBP or BMP) in base64"
    )


class BatchSearchRequest(BaseModel):
    """Several queries answered together (they share forward passes)."""

    queries: list[SearchRequest] = Field(description="the queries, answered in this order")


class Document(BaseModel):
    """A document's stored fields. Its image, if any, is only reachable through ``image_url``."""

    pid: int = Field(description="position of the document in the index")
    id: str | None = Field(description="the document's id in its collection")
    text: str | None
    image_url: str | None = Field(description="where this service serves the document's image, if it has one")
    metadata: dict[str, Any] | None


class Hit(Document):
    """A ranked search result."""

    rank: int = Field(description="1 for the best result")
    score: float = Field(description="late-interaction (MaxSim) score; higher is better")


class SearchResponse(BaseModel):
    query: str
    k: int
    with_image: bool = Field(description="whether the query had an image")
    took_ms: float = Field(description="time from receiving the query to its results, in milliseconds")
    results: list[Hit]


class BatchSearchResponse(BaseModel):
    responses: list[SearchResponse]


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    ready: bool
    detail: str


class BatchingStats(BaseModel):
    max_batch_size: int
    max_wait_ms: float
    batches: int = Field(description="batches processed since the service started")
    queries: int = Field(description="queries processed since the service started")
    recent_batch_sizes: list[int] = Field(description="sizes of the most recent batches, oldest first")


class Limits(BaseModel):
    max_query_chars: int
    default_k: int
    max_k: int
    max_batch_queries: int
    max_image_bytes: int
    max_image_pixels: int


class ServiceInfo(BaseModel):
    """What the service searches and what it accepts."""

    index: str = Field(description="name of the index folder")
    checkpoint: str | None = Field(description="checkpoint the index was built with")
    num_documents: int
    dim: int
    nbits: int
    search: str = Field(description="'plaid' or 'exact'")
    limits: Limits
    batching: BatchingStats


class Error(BaseModel):
    detail: str = Field(description="what was wrong with the request")
