"""Sharded search over HTTP on Ray Serve: one deployment per shard (with replicas) behind a router.

The router deployment is the FastAPI ingress. It encodes each query once with the checkpoint, sends the
query vectors to every shard deployment (a Serve handle picks one replica of each), and merges their
top-k exactly as ``flmr.search.ShardedSearcher`` does. Requests and responses use the bodies of
``flmr.serving`` (``schemas.SearchRequest``, ``SearchResponse``...) and its input checks and limits.

Endpoints:
    GET  /api/search?q=...&k=10        search by text
    POST /api/search                   JSON {"query", "k", "image_base64"}
    POST /api/search/batch             JSON {"queries": [...]}, answered in order
    GET  /api/documents/{pid}          a document by global pid
    GET  /api/health, /api/info        liveness; shards, replicas and counts

Example:
    >>> from flmr.distributed import connect, serve_sharded_index
    >>> connect("local", num_cpus=2)  # doctest: +SKIP
    >>> serve_sharded_index("my_sharded_index", replicas=2, port=8000)  # doctest: +SKIP
    >>> # curl "http://127.0.0.1:8000/api/search?q=text+editor&k=3"
"""

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmr.index import ShardedIndex, StoredDocument
from flmr.search.results import SearchHit
from flmr.search.settings import search_settings
from flmr.search.sharded import merge_batches

from .cluster import connect
from .sharded_search import ShardSearchActor

if TYPE_CHECKING:  # the serving extras come with ray[serve], and are imported only when serving
    from flmr.serving import ServiceSettings

APP_NAME = "flmr"


def build_application(
    shards: str | Path,
    checkpoint: str | None = None,
    *,
    replicas: int = 1,
    exact: bool = False,
    settings: "ServiceSettings | None" = None,
    cpus_per_replica: float = 0.5,
    gpus_per_replica: float = 0,
    router_cpus: float = 0.5,
    router_gpus: float = 0,
    device: str = "cpu",
    **plaid_settings: Any,
) -> Any:
    """The Serve application: shard deployments ``shard-00000``... and the ``router`` ingress.

    Args:
        shards: a sharded index folder (or one index folder), readable from every node.
        checkpoint: checkpoint that encodes queries (default: the one the index records).
        replicas: replicas of every shard deployment.
        exact: exact MaxSim instead of PLAID.
        settings: input limits (``max_k``, ``max_query_chars``...) as for ``flmr serve``.
        cpus_per_replica, gpus_per_replica: resources of each shard replica.
        router_cpus, router_gpus: resources of the router (it runs the query encoder, on the GPU when
            ``router_gpus`` is set).
        device: where shard searchers run ("cuda" with ``gpus_per_replica``).
        plaid_settings: ``PlaidSearcher`` options.

    Example:
        >>> from ray import serve  # doctest: +SKIP
        >>> serve.run(build_application("my_sharded_index", replicas=2), route_prefix="/")  # doctest: +SKIP
    """
    from fastapi import FastAPI, Query, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse
    from ray import serve

    from flmr.serving import ServiceSettings, schemas
    from flmr.serving.inputs import InputError, check_query, decode_base64_image

    loaded = ShardedIndex.load(shards)
    checkpoint = checkpoint or loaded.encoder.checkpoint
    if not checkpoint:
        raise ValueError(f"the index at {shards} does not record its checkpoint: pass one")
    settings = settings or ServiceSettings()
    app = FastAPI(title="flmr sharded search", version="1")

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @serve.deployment(name="router", ray_actor_options={"num_cpus": router_cpus, "num_gpus": router_gpus})
    @serve.ingress(app)
    class Router:
        def __init__(self, shard_handles: list[Any]) -> None:
            from flmr.retrieval import EncoderMismatchError, Retriever

            self.handles = shard_handles
            self.index = ShardedIndex.load(shards)
            self.shards = self.index.shards
            self.offsets = self.index.offsets
            self.retriever = Retriever.from_pretrained(checkpoint, device="cuda" if router_gpus else "cpu")
            for shard in self.shards:
                if not shard.encoder.compatible_with(self.retriever.encoder_identity):
                    raise EncoderMismatchError(f"the shard at {shard.path} was built with another checkpoint")

        async def answer(self, queries: list[tuple[str, int, Any]]) -> list[schemas.SearchResponse]:
            started = time.perf_counter()
            results: list[list[SearchHit]] = [[] for _ in queries]
            # Queries with and without images have different lengths: encode and search them apart.
            for with_image in (False, True):
                positions = [i for i, q in enumerate(queries) if (q[2] is not None) == with_image]
                if not positions:
                    continue
                texts = [queries[i][0] for i in positions]
                images = [queries[i][2] for i in positions] if with_image else None
                vectors = await run_in_threadpool(self.retriever.encode_queries, texts, images)
                k = max(queries[i][1] for i in positions)
                per_shard = await asyncio.gather(*(h.search.remote(vectors, k, True) for h in self.handles))
                for position, hits in zip(positions, merge_batches(per_shard, self.offsets, k), strict=True):
                    results[position] = hits[: queries[position][1]]
            took_ms = round((time.perf_counter() - started) * 1000, 2)
            return [
                schemas.SearchResponse(
                    query=text,
                    k=k,
                    with_image=image is not None,
                    took_ms=took_ms,
                    results=[_hit(h) for h in hits],
                )
                for (text, k, image), hits in zip(queries, results, strict=True)
            ]

        async def parse(self, text: str, k: int | None, image_base64: str | None) -> tuple[str, int, Any]:
            text, k = check_query(text, k, settings)
            image = None
            if image_base64 is not None:
                image = await run_in_threadpool(decode_base64_image, image_base64, settings)
            return text, k, image

        @app.get("/api/search")
        async def search_by_text(self, q: str = Query(...), k: int | None = None) -> schemas.SearchResponse:
            return (await self.answer([await self.parse(q, k, None)]))[0]

        @app.post("/api/search")
        async def search(self, request: schemas.SearchRequest) -> schemas.SearchResponse:
            return (await self.answer([await self.parse(request.query, request.k, request.image_base64)]))[0]

        @app.post("/api/search/batch")
        async def search_batch(self, request: schemas.BatchSearchRequest) -> schemas.BatchSearchResponse:
            if not 1 <= len(request.queries) <= settings.max_batch_queries:
                raise InputError(
                    422,
                    f"a batch holds 1 to {settings.max_batch_queries} queries, got {len(request.queries)}",
                )
            queries = [await self.parse(q.query, q.k, q.image_base64) for q in request.queries]
            return schemas.BatchSearchResponse(responses=await self.answer(queries))

        @app.get("/api/documents/{pid}")
        def document(self, pid: int) -> schemas.Document:
            total = self.index.num_documents
            if not 0 <= pid < total:
                raise InputError(404, f"no document with pid {pid}: the index has pids 0..{total - 1}")
            return _document(pid, self.index.document(pid))

        @app.get("/api/health")
        def health(self) -> schemas.Health:
            return schemas.Health(status="ok")

        @app.get("/api/info")
        def info(self) -> dict[str, Any]:
            return {
                "checkpoint": checkpoint,
                "num_documents": self.index.num_documents,
                "shards": [{"path": str(s.path), "num_documents": s.num_documents} for s in self.shards],
                "replicas_per_shard": replicas,
                "search": "exact" if exact else "plaid",
            }

    shard_deployment = serve.deployment(ShardSearchActor)
    bound_shards = [
        shard_deployment.options(
            name=f"shard-{number:05d}",
            num_replicas=replicas,
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        ).bind(str(shard.path), search_settings(exact=exact, **plaid_settings), device)
        for number, shard in enumerate(loaded.shards)
    ]
    return Router.bind(bound_shards)


def serve_sharded_index(
    shards: str | Path,
    checkpoint: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    ray_address: str | None = None,
    **options: Any,
) -> Any:
    """Deploy ``build_application(shards, checkpoint, **options)`` at http://host:port/; returns its handle.

    Connects to ``ray_address`` first when this process is not connected. The deployment keeps running
    until ``ray.serve.shutdown()`` (or the cluster stops).

    Example:
        >>> serve_sharded_index("my_sharded_index", replicas=2, port=8000)  # doctest: +SKIP
    """
    connect(ray_address)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_application(shards, checkpoint, **options), name=APP_NAME, route_prefix="/")


def _document(pid: int, stored: StoredDocument) -> Any:
    from flmr.serving import schemas

    return schemas.Document(pid=pid, id=stored.id, text=stored.text, image_url=None, metadata=stored.metadata)


def _hit(hit: SearchHit) -> Any:
    from flmr.serving import schemas

    document = _document(hit.pid, hit.document or StoredDocument())
    return schemas.Hit(**document.model_dump(), rank=hit.rank, score=hit.score)
