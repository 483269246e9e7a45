"""The HTTP search service: dynamic batching, the JSON API and the search page.

Needs the serving extras (FastAPI, uvicorn, python-multipart).

Example (``TestClient`` runs the app in process; ``flmr serve`` runs it under uvicorn):
    >>> from fastapi.testclient import TestClient
    >>> from flmr.serving import ServiceSettings, create_app
    >>> app = create_app(retriever, index, ServiceSettings(max_k=50))
    >>> with TestClient(app) as client:
    ...     response = client.get("/api/search", params={"query": "a terminal text editor", "k": 2})
    >>> response.status_code, len(response.json()["results"])
    (200, 2)
"""

from flmr._lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(("create_app",), ".app"),
    **dict.fromkeys(("DynamicBatcher",), ".batching"),
    **dict.fromkeys(
        (
            "SearchEngine",
            "SearchQuery",
        ),
        ".engine",
    ),
    **dict.fromkeys(("ServiceSettings",), ".settings"),
    **dict.fromkeys(("BatchResultError", "InputError", "ServingError", "ServingSettingsError"), ".errors"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, extra="serve")

__all__ = [
    "BatchResultError",
    "DynamicBatcher",
    "InputError",
    "SearchEngine",
    "SearchQuery",
    "ServiceSettings",
    "ServingError",
    "ServingSettingsError",
    "create_app",
]
