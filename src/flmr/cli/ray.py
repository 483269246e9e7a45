"""``flmr index --ray`` and ``flmr serve --ray``: the same commands, run on a Ray cluster."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flmr.distributed.cluster import connect, require_ray
from flmr.distributed.ray_encoding import encode_collection
from flmr.distributed.serve import serve_sharded_index
from flmr.distributed.shard_index import build_sharded_index
from flmr.index import IndexExistsError

from .exit_codes import EXIT_OK

if TYPE_CHECKING:
    from flmr.serving import ServiceSettings


def index_on_ray(args: argparse.Namespace, collection: Any, image_root: Path | None, checkpoint: str) -> int:
    """Encode on ``args.workers`` actors, then write ``args.shards`` shard indexes (or one index).

    The embeddings are kept in ``<output>.embeddings/`` until the index is written, so an interrupted
    run resumes where it stopped when the same command runs again.
    """
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise IndexExistsError(f"an index already exists at {output}; pass --overwrite to replace it")
    started = time.perf_counter()
    ray = require_ray()
    owns_connection = not ray.is_initialized()
    connect(args.ray)
    try:
        embeddings = output.parent / f"{output.name}.embeddings"
        parts = encode_collection(
            collection,
            embeddings,
            checkpoint,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            batch_size=args.batch_size,
            doc_maxlen=args.doc_maxlen,
            image_root=image_root,
            show_progress=not args.quiet,
        )
        build_sharded_index(parts, output, num_shards=args.shards, nbits=args.nbits, overwrite=args.overwrite)
        shutil.rmtree(embeddings)
    finally:
        if owns_connection:
            ray.shutdown()
    layout = f"{args.shards} shards" if args.shards > 1 else "one index"
    print(
        f"indexed {parts.num_documents} documents ({parts.num_vectors} vectors) into {output} as {layout} "
        f"with {args.workers} Ray workers in {time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


def serve_on_ray(args: argparse.Namespace, settings: ServiceSettings) -> int:
    """Serve a sharded (or single) index on Ray Serve, with the routes of ``flmr serve``, until interrupted."""
    if args.device != "cpu":
        raise ValueError(
            "`flmr serve --ray` runs shard replicas on CPU; for GPU replicas call "
            "flmr.distributed.serve_sharded_index(..., gpus_per_replica=..., device='cuda')"
        )
    connect(args.ray)
    from ray import serve

    serve_sharded_index(
        args.index,
        args.checkpoint,
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        settings=settings,
        precision=args.precision,
    )
    print(
        f"serving {args.index} on Ray Serve ({args.replicas} replicas per shard) at "
        f"http://{args.host}:{args.port}/api/search; Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        while True:
            time.sleep(3600)
    finally:
        serve.shutdown()
