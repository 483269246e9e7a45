"""PLAID search latency against exact brute-force MaxSim over the same documents, in one run.

Synthetic clustered token vectors (see synthetic.py): by default 100,000 documents of about 60 vectors,
dim 128, nbits=2, k=10. The baseline is ExactSearcher over the original float32 vectors held in RAM,
given whole query batches (its fastest mode); PLAID runs its stages (never the exact fallback) one
query at a time, then in batches (throughput against batch 1), from the memory-mapped index. Also prints build time and bytes per stored vector against float32 and float16.

Run: python benchmarks/search_speed.py [--documents 100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from synthetic import SyntheticCollection

from flmr.index import IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--mean-length", type=int, default=60)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--no-store-vectors", action="store_true", help="keep codes only: re-rank on decompressed vectors"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as load:
        print(f"load average: {load.read().split()[:3]}; torch threads {torch.get_num_threads()}")

    collection = SyntheticCollection(args.documents, args.mean_length)
    chunks = list(collection.chunks())
    embeddings = torch.cat([c.embeddings for c in chunks])
    doclens = torch.cat([c.doclens for c in chunks])
    del chunks
    queries = collection.queries(args.queries)
    print(f"collection: {args.documents} documents, {embeddings.shape[0]} vectors, dim {embeddings.shape[1]}")

    with tempfile.TemporaryDirectory() as folder:
        started = time.time()
        index = IndexWriter(nbits=args.nbits, store_vectors=not args.no_store_vectors).write(
            Path(folder) / "index", embeddings, doclens
        )
        build_seconds = time.time() - started
        stored_bytes = index.codec.bytes_per_vector + 4  # residual codes + int32 centroid id, read per query
        print(
            f"build: {build_seconds:.1f} s ({build_seconds / 300:.2f} of the 5-minute budget), "
            f"{index.num_partitions} partitions"
        )
        print(
            f"storage: {stored_bytes} bytes per vector = {stored_bytes / 512:.4f} of float32, "
            f"{stored_bytes / 256:.4f} of float16 (searched in memory); stores float16 vectors for "
            f"re-ranking: {index.stores_vectors}; whole index folder "
            f"{folder_bytes(Path(folder) / 'index') / embeddings.shape[0]:.1f} bytes per vector"
        )

        plaid = PlaidSearcher(index, exact_when_cheaper=False)
        print(
            f"a default PlaidSearcher would search this collection exactly: {plaid.exact_is_cheaper(args.k)}"
        )
        plaid.search(queries[:2], args.k)  # warm up the page cache and thread pools
        started = time.time()
        plaid_hits = [plaid.search(query, args.k)[0] for query in queries]
        plaid_seconds = (time.time() - started) / len(queries)
        started = time.time()
        for first in range(0, len(queries), args.batch):
            plaid.search(queries[first : first + args.batch], args.k)
        batched_seconds = (time.time() - started) / len(queries)

        exact = ExactSearcher(embeddings, doclens)
        started = time.time()
        exact_hits = exact.search(queries, args.k)
        exact_seconds = (time.time() - started) / len(queries)

    overlap = sum(
        len({h.pid for h in p} & {h.pid for h in e}) / args.k
        for p, e in zip(plaid_hits, exact_hits, strict=True)
    ) / len(queries)
    print(f"exact MaxSim (baseline): {exact_seconds * 1000:.1f} ms/query")
    print(
        f"PLAID: {plaid_seconds * 1000:.1f} ms/query = {plaid_seconds / exact_seconds:.4f} of exact "
        f"(target <= 0.1), recall@{args.k} vs exact {overlap:.3f}"
    )
    print(
        f"PLAID in batches of {args.batch}: {batched_seconds * 1000:.1f} ms/query, throughput "
        f"{plaid_seconds / batched_seconds:.1f}x batch 1 (target >= 3)"
    )


if __name__ == "__main__":
    main()
