"""Limits and tuning of the search service."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class ServiceSettings:
    """What the search service accepts and how it batches queries.

    Args:
        max_query_chars: longest query text accepted.
        default_k: results per query when a request does not say.
        max_k: most results one query may ask for.
        max_batch_queries: most queries in one batch-search request.
        max_image_bytes: largest image upload (raw bytes, before base64).
        max_image_pixels: largest image (width x height) decoded.
        max_request_bytes: largest request body of any kind.
        batch_max_size: most queries encoded in one forward pass.
        batch_wait_ms: how long the first query of a batch waits for others to join it.
        image_root: when set, document images are served only from inside this folder.
        exact: score every document by full MaxSim instead of PLAID search.
        plaid_settings: keyword arguments of [`PlaidSearcher`] (``ncells``, ``ndocs``, ...).
        request_cpus: cores kept for request handling (HTTP parsing, image decoding, responses) while
            a batch is encoded and searched; the batch's threads use the others, at least one (see
            the README's "Speed on CPU" for the service's concurrency model).

    Example:
        >>> settings = ServiceSettings(max_k=50, batch_wait_ms=2.0)
        >>> settings.max_image_bytes // MEBIBYTE
        8
    """

    max_query_chars: int = 2000
    default_k: int = 10
    max_k: int = 100
    max_batch_queries: int = 32
    max_image_bytes: int = 8 * MEBIBYTE
    max_image_pixels: int = 4096 * 4096
    max_request_bytes: int = 64 * MEBIBYTE
    batch_max_size: int = 32
    batch_wait_ms: float = 5.0
    image_root: Path | None = None
    exact: bool = False
    plaid_settings: dict[str, Any] = field(default_factory=dict)
    request_cpus: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be between 1 and max_k={self.max_k}, got {self.default_k}")
        if self.request_cpus < 0:
            raise ValueError(f"request_cpus must not be negative, got {self.request_cpus}")
        for name in ("max_query_chars", "max_batch_queries", "max_image_bytes", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_max_size < 1 or self.batch_wait_ms < 0:
            raise ValueError(
                f"batch_max_size must be positive and batch_wait_ms not negative, got "
                f"{self.batch_max_size} and {self.batch_wait_ms}"
            )
