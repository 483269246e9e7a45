"""Recall of PLAID search against exact MaxSim on real text with real token embeddings.

Collection: Debian package long descriptions (documents) and their one-line summaries (queries), encoded
by MiniLM and projected to 128-d (see debian_collection.py). Two query kinds:
  - text: the summary's token vectors, zero-padded to 32 positions (FLMR's masked positions);
  - text+image: the same plus 32 stand-in "image" vectors (see ``add_image_vectors``).
Baseline of the run: exact MaxSim over the original float vectors. For each nbits, figures are
recall@10 (PLAID top 10 against the exact top 10) per candidate-generation option and decompression
mode, with the index keeping full-precision vectors for re-ranking (the default) and without them;
for the compressed-only index, the recall of exact MaxSim over the decompressed vectors (the ceiling of
re-ranking on them); success@10 (the query's own package in the top 10) as a ratio
of the baseline's; and latency as a ratio of the baseline's (batched exact, one-at-a-time PLAID).

Run: python benchmarks/search_quality.py [--documents 25000] [--queries 200] [--nbits 2 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from debian_collection import load_collection

from flmr.index import IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher

IMAGE_VECTORS = 32


def add_image_vectors(queries: torch.Tensor, seed: int = 0, noise: float = 0.6) -> torch.Tensor:
    """Append 32 stand-in image vectors to each (32, dim) text query.

    A vision encoder's tokens, mapped into the late-interaction space, land near the concepts of the
    query rather than on its exact tokens: each stand-in is a random convex combination (Dirichlet
    weights) of the query's own non-zero text vectors plus Gaussian noise of relative norm ``noise``,
    re-normalised.
    """
    generator = torch.Generator().manual_seed(seed)
    extended = []
    for query in queries.float():
        text = query[query.abs().amax(dim=-1) > 0]
        weights = torch.distributions.Dirichlet(torch.full((text.shape[0],), 0.5)).sample((IMAGE_VECTORS,))
        mixed = torch.nn.functional.normalize(weights @ text, dim=-1)
        jitter = torch.nn.functional.normalize(torch.randn(mixed.shape, generator=generator), dim=-1)
        image = torch.nn.functional.normalize(mixed + noise * jitter, dim=-1)
        extended.append(torch.cat([query, image]))
    return torch.stack(extended)


def top_pids(hits: list, k: int) -> list[set[int]]:
    return [{hit.pid for hit in query_hits[:k]} for query_hits in hits]


def recall(found: list[set[int]], reference: list[set[int]]) -> float:
    return sum(len(f & r) / len(r) for f, r in zip(found, reference, strict=True)) / len(reference)


def success(found: list[set[int]], relevant: torch.Tensor) -> float:
    return sum(int(pid) in f for f, pid in zip(found, relevant.tolist(), strict=True)) / len(found)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=25_000)
    parser.add_argument("--encoded-queries", type=int, default=400, help="queries encoded and cached")
    parser.add_argument("--queries", type=int, default=200, help="how many of the encoded queries to run")
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)

    collection = load_collection(args.documents, args.encoded_queries)
    documents, doclens = collection.doc_embeddings.float(), collection.doclens
    relevant = collection.query_pids[: args.queries]
    print(f"collection: {args.documents} documents, {documents.shape[0]} vectors, {len(relevant)} queries")
    query_sets = {"text": collection.query_embeddings[: args.queries].float()}
    query_sets["text+image"] = add_image_vectors(query_sets["text"])

    exact = ExactSearcher(documents, doclens)
    references, exact_seconds, exact_success = {}, {}, {}
    for name, queries in query_sets.items():
        started = time.time()
        references[name] = top_pids(exact.search(queries, args.k), args.k)
        exact_seconds[name] = (time.time() - started) / len(queries)
        exact_success[name] = success(references[name], relevant)
        print(
            f"[{name}] exact MaxSim over float vectors (baseline): {exact_seconds[name] * 1000:.0f} ms/query, "
            f"success@{args.k} {exact_success[name]:.3f}"
        )

    for nbits in args.nbits:
        for store_vectors in (True, False):
            with tempfile.TemporaryDirectory() as folder:
                started = time.time()
                index = IndexWriter(nbits=nbits, store_vectors=store_vectors).write(
                    f"{folder}/index",
                    documents,
                    doclens,
                    encoder={"name": "all-MiniLM-L6-v2, 384->128 random orthogonal"},
                )
                code_bytes = index.codec.bytes_per_vector + 4
                disk_bytes = code_bytes + (2 * index.dim if store_vectors else 0)
                print(
                    f"\nnbits={nbits}, store_vectors={store_vectors}: {index.num_partitions} partitions, "
                    f"built in {time.time() - started:.0f} s, {code_bytes} bytes per vector searched in memory, "
                    f"{disk_bytes} on disk"
                )
                report_index(index, query_sets, references, exact_seconds, exact_success, relevant, args.k)


def report_index(index, query_sets, references, exact_seconds, exact_success, relevant, k) -> None:
    """Recall, success and latency ratios of PLAID over ``index`` for every query set and option."""
    modes = [("all", True), ("text_first_32", True)]
    if not index.stores_vectors:
        modes += [("all", False)]  # re-ranking on unnormalised decompressed vectors
    for name, queries in query_sets.items():
        reference = references[name]
        if name == "text" and not index.stores_vectors:  # the ceiling of re-ranking on decompressed vectors
            vectors, owners = index.decompress(torch.arange(index.num_documents))
            decompressed = top_pids(ExactSearcher(vectors, index.doclens).search(queries, k), k)
            print(
                f"  [{name}] exact MaxSim over decompressed vectors: recall@{k} "
                f"{recall(decompressed, reference):.3f} (the compression ceiling)"
            )
        for option, normalize in modes:
            searcher = PlaidSearcher(index, candidate_query_vectors=option, normalize_decompressed=normalize)
            started = time.time()
            found = top_pids(searcher.search(queries, k), k)
            seconds = (time.time() - started) / len(queries)
            label = option if index.stores_vectors else f"{option}, normalize={normalize}"
            print(
                f"  [{name}] PLAID {label:<30}: recall@{k} {recall(found, reference):.3f}, "
                f"success@{k} ratio {success(found, relevant) / exact_success[name]:.3f}, "
                f"latency ratio {seconds / exact_seconds[name]:.3f} ({seconds * 1000:.0f} ms/query)"
            )


if __name__ == "__main__":
    main()
