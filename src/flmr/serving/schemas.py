"""Request and response bodies of the search service (they make its OpenAPI schema)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EXAMPLE_QUERY = "Which text editor runs in a terminal?"
QUERY_ALIAS = "q"
INSTRUCTION_HELP = (
    "what a PreFLMR checkpoint reads before the question (default: the instruction it was trained with "
    "for the query's form: image + question, question only, image only; empty: none)"
)


def merged_query_alias(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the query text under ``query`` when given as ``q`` (every endpoint takes both).

    Raises ValueError when both are given and differ.
    """
    if QUERY_ALIAS not in values:
        return values
    values = dict(values)
    alias = values.pop(QUERY_ALIAS)
    if "query" in values and values["query"] != alias:
        raise ValueError("give the query text once: 'query' and its alias 'q' differ")
    values["query"] = alias
    return values


class _QueryBody(BaseModel):
    """A request body whose query text is ``query`` (or ``q``); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _query_alias(cls, data: Any) -> Any:
        return merged_query_alias(data) if isinstance(data, dict) else data


class SearchRequest(_QueryBody):
    """A text query, optionally with an image given as base64 (or a ``data:image/...;base64,`` URL);
    the text may be empty when there is an image. ``q`` is accepted for ``query``."""

    query: str = Field(default="", description="the question (alias: q)", examples=[EXAMPLE_QUERY])
    instruction: str | None = Field(default=None, description=INSTRUCTION_HELP)
    k: int | None = Field(default=None, description="how many results (default: the service's default_k)")
    image_base64: str | None = Field(
        default=None, description="an image (JPEG, PNG, GIF, WEBP or BMP) in base64"
    )
    explain: bool = Field(
        default=False, description="attach to every result an explanation of its score (see /api/explain)"
    )
    filter: dict[str, Any] | None = Field(
        default=None,
        description="only documents whose metadata match: field -> value, or -> {operator: operand} with "
        "$eq $ne $gt $gte $lt $lte $in $nin $exists; fields are ANDed; '$id' is the document id",
        examples=[{"lang": "en", "year": {"$gte": 2000, "$lt": 2010}, "tag": {"$in": ["a", "b"]}}],
    )
    hybrid_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, description="fuse with BM25 over the document texts, with this share"
    )
    fusion: Literal["linear", "rrf"] = Field(
        default="linear", description="how hybrid scores fuse: min-max normalised scores or reciprocal ranks"
    )


class ExplainRequest(_QueryBody):
    """A query (as for /api/search) and the document whose score to explain, by ``pid`` or by ``id``."""

    query: str = Field(default="", description="the question (alias: q)", examples=[EXAMPLE_QUERY])
    instruction: str | None = Field(default=None, description=INSTRUCTION_HELP)
    pid: int | None = Field(default=None, description="position of the document in the index")
    id: str | None = Field(default=None, description="the document's id in its collection (instead of pid)")
    image_base64: str | None = Field(
        default=None, description="the query's image (JPEG, PNG, GIF, WEBP or BMP) in base64"
    )


class QueryToken(BaseModel):
    """A query vector that counts in the score."""

    position: int = Field(description="position among the query's encoded vectors")
    kind: str = Field(description="'text', 'instruction' (a token of the instruction) or 'image'")
    label: str = Field(description="the query token ('[CLS]', '[Q]', a word piece, '[MASK]') or 'image i'")


class DocumentToken(BaseModel):
    """A stored vector of the document and what the query's vectors found there."""

    position: int = Field(description="position among the document's stored vectors")
    kind: str = Field(description="'text', 'image' or 'vector' (origin unknown)")
    label: str = Field(description="the token ('[CLS]', '[D]', '[SEP]', a word piece) or 'image i'")
    image: int | None = Field(description="1-based number of the document's image this vector belongs to")
    start: int | None = Field(description="character offset of the token in the document text")
    end: int | None = Field(description="character offset just after the token")
    contribution: float = Field(description="sum of the contributions of the query vectors that matched it")
    best_query: str | None = Field(description="label of the query vector adding the most here")


class TokenMatch(BaseModel):
    query: int = Field(description="index into query_tokens")
    document: int = Field(description="position of the matched document token")
    contribution: float = Field(description="similarity of the two vectors: what this query vector adds")


class Explanation(BaseModel):
    """Which document vector each query vector matched; the contributions sum to ``score``."""

    pid: int
    score: float
    query_tokens: list[QueryToken]
    document_tokens: list[DocumentToken]
    matches: list[TokenMatch] = Field(description="one per query token, in the same order")


class BatchSearchRequest(BaseModel):
    """Several queries answered together (they share forward passes)."""

    model_config = ConfigDict(extra="forbid")

    queries: list[SearchRequest] = Field(description="the queries, answered in this order")


class Document(BaseModel):
    """A document's stored fields. Its image, if any, is only reachable through ``image_url``."""

    pid: int = Field(description="position of the document in the index")
    id: str | None = Field(description="the document's id in its collection")
    text: str | None
    image_url: str | None = Field(description="where this service serves the document's (first) image")
    image_urls: list[str] = Field(
        default_factory=list, description="every image of the document, in order ('image i' is the i-th)"
    )
    metadata: dict[str, Any] | None


class Hit(Document):
    """A ranked search result."""

    rank: int = Field(description="1 for the best result")
    score: float = Field(description="late-interaction (MaxSim) score, or the fused score of a hybrid search")
    late_interaction_score: float | None = Field(default=None, description="hybrid search: the MaxSim score")
    bm25_score: float | None = Field(default=None, description="hybrid search: the BM25 score")
    explanation: Explanation | None = Field(
        default=None, description="present when the search asked to explain"
    )


class SearchResponse(BaseModel):
    query: str = Field(description="the question, as given")
    instruction: str | None = Field(
        default=None, description="the instruction the model read before the question (None: none)"
    )
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
    max_concurrent_decodes: int
    request_body_timeout_s: float


class ServiceInfo(BaseModel):
    """What the service searches and what it accepts."""

    index: str = Field(description="name of the index folder")
    checkpoint: str | None = Field(description="checkpoint the index was built with")
    checkpoint_name: str | None = Field(default=None, description="its name (the last part of its path)")
    default_instructions: dict[str, str] = Field(
        default_factory=dict,
        description="per query form (image_and_question, question, image), the instruction a query gets "
        "when it gives none; empty for checkpoints that read no instruction",
    )
    num_documents: int
    dim: int
    nbits: int
    search: str = Field(description="'plaid' or 'exact'")
    limits: Limits
    batching: BatchingStats


class Error(BaseModel):
    detail: str = Field(description="what was wrong with the request")
