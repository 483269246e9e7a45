"""Build and query a 1,000,000-document index from a stream, on a small CPU machine.

The synthetic collection (see synthetic.py) is generated chunk by chunk and streamed into the writer,
so the raw vectors never sit in RAM together. Prints build time, peak resident memory (getrusage
maxrss), index size, PLAID latency from the memory-mapped index and, as the baseline of the same run,
exact MaxSim over the whole decompressed index for a few queries (latency ratio and recall@k).

Run: python benchmarks/index_scale.py [--documents 1000000] [--mean-length 32] [--folder data/scale_index]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from synthetic import SyntheticCollection

from flmr.index import IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=1_000_000)
    parser.add_argument("--mean-length", type=int, default=32)
    parser.add_argument("--num-partitions", type=int, default=32_768)
    parser.add_argument("--nbits", type=int, default=2)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--exact-queries", type=int, default=4)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--folder", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "scale_index"
    )
    parser.add_argument(
        "--no-store-vectors", action="store_true", help="keep codes only: re-rank on decompressed vectors"
    )
    args = parser.parse_args()

    collection = SyntheticCollection(args.documents, args.mean_length)
    writer = IndexWriter(
        nbits=args.nbits, num_partitions=args.num_partitions, store_vectors=not args.no_store_vectors
    )
    started = time.time()
    index = writer.write(
        args.folder,
        collection.chunks(docs_per_chunk=20_000),
        expected_num_vectors=args.documents * args.mean_length,
        overwrite=True,
    )
    build_seconds = time.time() - started
    size = sum(p.stat().st_size for p in args.folder.rglob("*") if p.is_file())
    print(
        f"index: {index.num_documents} documents, {index.num_vectors} vectors, {index.num_partitions} partitions"
    )
    print(f"build: {build_seconds / 60:.1f} min, peak memory {peak_memory_gib():.2f} GiB (maxrss)")
    print(
        f"size on disk: {size / 2**30:.2f} GiB = {size / index.num_vectors:.1f} bytes per vector "
        f"({size / (index.num_vectors * 512):.4f} of float32)"
    )

    queries = collection.queries(args.queries)
    plaid = PlaidSearcher(index)
    plaid.search(queries[:2], args.k)
    started = time.time()
    plaid_hits = [plaid.search(query, args.k)[0] for query in queries]
    plaid_seconds = (time.time() - started) / len(queries)

    started = time.time()
    exact_hits = ExactSearcher(index).search(queries[: args.exact_queries], args.k)
    exact_seconds = (time.time() - started) / args.exact_queries
    recall = (
        sum(
            len({h.pid for h in p} & {h.pid for h in e}) / args.k
            for p, e in zip(plaid_hits[: args.exact_queries], exact_hits, strict=True)
        )
        / args.exact_queries
    )
    print(f"exact MaxSim over the index (baseline): {exact_seconds:.1f} s/query")
    print(
        f"PLAID: {plaid_seconds * 1000:.1f} ms/query = {plaid_seconds / exact_seconds:.5f} of exact, "
        f"recall@{args.k} vs exact {recall:.3f}; peak memory now {peak_memory_gib():.2f} GiB"
    )


if __name__ == "__main__":
    main()
