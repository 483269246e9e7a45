"""The HTTP search service: dynamic batching, the JSON API and the search page.

Needs the serving extras (FastAPI, uvicorn, python-multipart).

Example:
    >>> from flmr.serving import ServiceSettings, create_app
    >>> app = create_app(retriever, index, ServiceSettings(max_k=50))  # doctest: +SKIP
"""

from .app import create_app
from .batching import DynamicBatcher
from .engine import SearchEngine, SearchQuery
from .settings import ServiceSettings

__all__ = ["DynamicBatcher", "SearchEngine", "SearchQuery", "ServiceSettings", "create_app"]
