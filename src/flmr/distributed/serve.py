"""Sharded search over HTTP on Ray Serve: the service of ``flmr.serving`` over shard deployments.

The router deployment runs the very app ``flmr serve`` runs (``flmr.serving.create_app``: the same
routes, search page, input limits, batching, filters, hybrid fusion, explanations, uploads and image
routes), with a ``ServeShardedSearcher`` as its searcher: each shard is a Serve deployment (with
replicas) holding that shard's searcher; the router encodes each batch of queries once, sends the
query vectors to every shard deployment (a Serve handle picks one replica of each) and merges their
top-k exactly as ``flmr.search.ShardedSearcher`` does. Documents, images and explanations are read
from the sharded index (``flmr.index.ShardedIndex``), which every node reads from shared storage.

Example (starts a Ray cluster and an HTTP server, so the tests do not run it; ``ServeShardedSearcher``
shows the merge in this process):
    >>> from flmr.distributed import connect, serve_sharded_index
    >>> connect("local", num_cpus=2)  # doctest: +SKIP
    >>> serve_sharded_index("my_sharded_index", replicas=2, port=8000)  # doctest: +SKIP
    >>> # curl "http://127.0.0.1:8000/api/search?q=text+editor&k=3"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flmr.index.sharded import ShardedIndex
from flmr.search.base import Searcher, check_k
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.results import SearchHit
from flmr.search.settings import SearchSettings, search_settings
from flmr.search.sharded import merge_batches

from .cluster import connect
from .errors import DistributedError
from .sharded_search import ShardSearchActor

if TYPE_CHECKING:  # the serving extras come with ray[serve], and are imported only when serving
    from flmr.serving import ServiceSettings

APP_NAME = "flmr"


class ServeShardedSearcher(Searcher):
    """A ``Searcher`` over shard deployments of Ray Serve: fan out, then merge the top-k exactly.

    Args:
        index: the sharded index the deployments hold (for the pid layout and documents).
        handles: one Serve handle per shard, in shard order, to ``ShardSearchActor`` deployments.
        settings: the settings the shard deployments search with.

    ``search`` blocks on the shards' answers: call it from a worker thread (the service's batcher
    does), not from the event loop.

    Example (Serve handles need a Ray cluster; in-process stand-ins that answer the same
    ``handle.search.remote(...).result()`` calls show that the merge is ``ShardedSearcher``'s):
        >>> from types import SimpleNamespace
        >>> from flmr.search import ShardedSearcher
        >>> sharded, settings = ShardedIndex.load("my_sharded_index"), SearchSettings(exact=True)
        >>> def local_handle(shard):  # a ShardSearchActor answering as a Serve deployment would
        ...     actor = ShardSearchActor(str(shard.path), settings)
        ...     call = lambda *args: SimpleNamespace(result=lambda: actor.search(*args))
        ...     return SimpleNamespace(search=SimpleNamespace(remote=call))
        >>> searcher = ServeShardedSearcher(sharded, [local_handle(s) for s in sharded.shards], settings)
        >>> hits = searcher.search(query_embeddings, k=5)
        >>> [[hit.pid for hit in q] for q in hits] == [
        ...     [hit.pid for hit in q] for q in ShardedSearcher(sharded, settings).search(query_embeddings, k=5)]
        True
    """

    def __init__(self, index: ShardedIndex, handles: Sequence[Any], settings: SearchSettings) -> None:
        if len(handles) != index.num_shards:
            raise DistributedError(
                f"{len(handles)} shard handles for a sharded index of {index.num_shards} shards"
            )
        self.index = index
        self.handles = list(handles)
        self.settings = settings

    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        *,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` hits (global pids) of each query; see ``Searcher.search``."""
        check_k(k)
        metadata_filter = compile_filter(filter)
        spec = None if metadata_filter is None else metadata_filter.spec
        batch = queries.detach().cpu()
        responses = [handle.search.remote(batch, k, return_documents, spec) for handle in self.handles]
        return merge_batches([response.result() for response in responses], self.index.offsets, k)


def build_application(
    shards: str | Path,
    checkpoint: str | None = None,
    *,
    replicas: int = 1,
    settings: ServiceSettings | None = None,
    cpus_per_replica: float = 0.5,
    gpus_per_replica: float = 0,
    router_cpus: float = 0.5,
    router_gpus: float = 0,
    device: str = "cpu",
    precision: str = "float32",
    exact: bool | None = None,
    **plaid_options: Any,
) -> Any:
    """The Serve application: shard deployments ``shard-00000``... and the ``router`` ingress.

    Args:
        shards: a sharded index folder (or one index folder), readable from every node.
        checkpoint: checkpoint that encodes queries (default: the one the index records).
        replicas: replicas of every shard deployment.
        settings: the service's settings, as for ``flmr serve`` (limits, batching, ``search``).
        cpus_per_replica, gpus_per_replica: resources of each shard replica.
        router_cpus, router_gpus: resources of the router (it runs the query encoder, on the GPU when
            ``router_gpus`` is set).
        device: where shard searchers run ("cuda" with ``gpus_per_replica``).
        precision: the query encoder's inference precision (see ``flmr.model.precision``).
        exact, plaid_options: the earlier keyword form of ``settings.search``.

    Raises:
        DistributedError: the index records no checkpoint and none was given.

    Example (needs a Ray cluster, so the tests do not run it):
        >>> from ray import serve  # doctest: +SKIP
        >>> serve.run(build_application("my_sharded_index", replicas=2), route_prefix="/")  # doctest: +SKIP
    """
    from ray import serve

    from flmr.serving import ServiceSettings

    index = ShardedIndex.load(shards)
    checkpoint = checkpoint or index.encoder.get("checkpoint")
    if not checkpoint:
        raise DistributedError(f"the index at {shards} does not record its checkpoint: pass one")
    settings = settings or ServiceSettings()
    if exact is not None or plaid_options:
        settings = replace(settings, search=search_settings(exact=exact, **plaid_options))
    shard_settings = replace(settings.search, hybrid=None)

    @serve.deployment(name="router", ray_actor_options={"num_cpus": router_cpus, "num_gpus": router_gpus})
    @serve.ingress()
    class Router:
        def __init__(self, *handles: Any) -> None:
            from flmr.retrieval import Retriever
            from flmr.serving import create_app

            sharded = ShardedIndex.load(shards)
            retriever = Retriever.from_pretrained(
                checkpoint,
                device="cuda" if router_gpus else "cpu",
                batch_size=settings.max_batch_size,
                precision=precision,
            )
            searcher = ServeShardedSearcher(sharded, handles, shard_settings)
            self.service = create_app(retriever, sharded, settings, searcher=searcher)

        def __serve_build_asgi_app__(self) -> Any:
            return self.service

    shard_deployment = serve.deployment(ShardSearchActor)
    bound_shards = [
        shard_deployment.options(
            name=f"shard-{number:05d}",
            num_replicas=replicas,
            ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
        ).bind(str(shard.path), shard_settings, device)
        for number, shard in enumerate(index.shards)
    ]
    return Router.bind(*bound_shards)


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

    Example (starts a Ray cluster and an HTTP server, so the tests do not run it):
        >>> serve_sharded_index("my_sharded_index", replicas=2, port=8000)  # doctest: +SKIP
    """
    connect(ray_address)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_application(shards, checkpoint, **options), name=APP_NAME, route_prefix="/")
