"""Limits and tuning of the search service."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flmr._deprecation import renamed_keywords, warn_renamed
from flmr.search.settings import SearchSettings, search_settings

MEBIBYTE = 1024 * 1024


@renamed_keywords(batch_max_size="max_batch_size")
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
        decode_side: images are decoded (JPEG) or reduced (others) to about this many pixels on their
            shorter side, never less, before the model's processor resizes them (to 224 or 336 px).
        max_concurrent_decodes: most images decoded at once; more wait their turn. With
            ``max_image_pixels`` it bounds the memory decoding takes (about 4 bytes per pixel each).
        request_body_timeout_s: a request whose body has not fully arrived after this long gets 408.
        keep_alive_timeout_s: idle keep-alive connections are closed after this long (uvicorn).
        max_connections: connections served at once; more get 503 (uvicorn's ``limit_concurrency``).
        max_batch_size: most queries encoded in one forward pass (``batch_max_size``, its earlier
            name, still works, with a ``DeprecationWarning``).
        batch_wait_ms: how long the first query of a batch waits for others to join it.
        image_root: when set, document images are served only from inside this folder.
        search: how the index is searched (see [`SearchSettings`]: exact or PLAID and its knobs);
            requests choose their own filter and hybrid fusion.
        exact, plaid_settings: the earlier form of ``search`` (``exact=True``; a dict of
            [`PlaidSettings`]' fields), folded into ``search`` when given.
        index_refresh_seconds: how often the service checks for a newer generation of the index (other
            processes' adds and deletes); a commit is served within this delay plus one batch.
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
    decode_side: int = 448
    max_concurrent_decodes: int = 4
    request_body_timeout_s: float = 10.0
    keep_alive_timeout_s: int = 5
    max_connections: int = 256
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    image_root: Path | None = None
    search: SearchSettings = field(default_factory=SearchSettings)
    exact: bool | None = None
    plaid_settings: dict[str, Any] | None = None
    index_refresh_seconds: float = 1.0
    request_cpus: int = 0

    def __post_init__(self) -> None:
        if self.exact is not None or self.plaid_settings is not None:
            earlier = search_settings(exact=self.exact, **(self.plaid_settings or {}))
            object.__setattr__(self, "search", earlier)
            object.__setattr__(self, "exact", None)
            object.__setattr__(self, "plaid_settings", None)
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be between 1 and max_k={self.max_k}, got {self.default_k}")
        if self.request_cpus < 0:
            raise ValueError(f"request_cpus must not be negative, got {self.request_cpus}")
        for name in (
            "max_query_chars",
            "max_batch_queries",
            "max_image_bytes",
            "max_image_pixels",
            "decode_side",
            "max_concurrent_decodes",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.request_body_timeout_s <= 0:
            raise ValueError(f"request_body_timeout_s must be positive, got {self.request_body_timeout_s}")
        if self.max_batch_size < 1 or self.batch_wait_ms < 0:
            raise ValueError(
                f"max_batch_size must be positive and batch_wait_ms not negative, got "
                f"{self.max_batch_size} and {self.batch_wait_ms}"
            )

    @property
    def batch_max_size(self) -> int:
        """``max_batch_size`` under its earlier name (deprecated)."""
        warn_renamed("ServiceSettings", "batch_max_size", "max_batch_size", stacklevel=3)
        return self.max_batch_size

    def server_options(self) -> dict[str, Any]:
        """uvicorn's connection limits for this service (keyword arguments of ``uvicorn.run``/``Config``).

        Example:
            >>> ServiceSettings().server_options()["limit_concurrency"]
            256
        """
        return {
            "timeout_keep_alive": self.keep_alive_timeout_s,
            "limit_concurrency": self.max_connections,
            # request line and headers: 16 KiB at most (h11; httptools has its own fixed limits)
            "h11_max_incomplete_event_size": 16 * 1024,
        }
