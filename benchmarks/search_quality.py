"""Recall and latency of PLAID search against exact MaxSim, on real text with real query shapes.

Collection (see flmr_debian.py): Debian package descriptions encoded by an FLMR checkpoint with real
MiniLM text weights; queries are package summaries encoded by the model's own ``query()`` (32 vectors,
[MASK]-expanded). Two query kinds:
  - text: the ``query()`` output as it is;
  - text+image, PreFLMR-shaped (ViT-B/32 at 224 px): the 32 text vectors, then 32 vectors standing for
    the mapped [CLS] features and 49 for the transformer-mapped patches (see ``preflmr_queries``).
Baseline of the run: exact MaxSim over the float32 vectors in RAM (``ExactSearcher``, whole batches,
its fastest mode); its top-10 lists are cached under data/ (minutes at 25k documents), its time is
measured in every run on the first 20 queries. For each nbits and storage policy the table gives bytes per vector on disk (the
whole index folder), recall@10 of the PLAID stages against the exact top 10, their latency one query
at a time as a ratio of exact's per-query time (cold: the first search of a freshly loaded index;
warm: the rest), batch-32 throughput against batch 1, build time, and whether a default
``PlaidSearcher`` would search this collection exactly instead (``exact_is_cheaper``: then its
results are exact search's). The original engine's figures on the same vectors (built from its
repository on the CPU, outside this project) are in the README's "Search quality and storage".

Run: python benchmarks/search_quality.py [--documents 3000 10000 25000 100000] [--queries 300] [--nbits 2 4 8]
     [--policies default "codes only"] [--int8-store] [--threads 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from flmr_debian import DATA_DIR, load_encoded

from flmr.index import IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher

CLS_VECTORS = 32  # PreFLMR maps the image's [CLS] feature to 32 vectors
PATCH_VECTORS = 49  # ViT-B/32 at 224 px: 7 x 7 patches through the transformer mapping network
# IndexWriter arguments of each storage policy; "default" passes none (the float16 copy at every nbits)
STORE_POLICIES = {"default": {}, "float16": {"store_vectors": True}, "codes only": {"store_vectors": False}}


def preflmr_queries(text: torch.Tensor, relevant: list[torch.Tensor], seed: int = 0) -> torch.Tensor:
    """PreFLMR-shaped (num_queries, 32 + 32 + 49, dim) queries from text queries and their documents.

    No image encoder trained for this space exists here, so the image vectors are stand-ins placed as
    a trained one places them: the 32 mapped-[CLS] vectors near the concepts of the question (random
    convex combinations of its text vectors plus noise of relative norm 0.6), the 49 patch vectors
    near the item the image shows, i.e. the token vectors of the document the query is about plus
    noise of relative norm 1.0. All re-normalised.
    """
    generator = torch.Generator().manual_seed(seed)

    def noisy(vectors: torch.Tensor, noise: float) -> torch.Tensor:
        jitter = torch.nn.functional.normalize(torch.randn(vectors.shape, generator=generator), dim=-1)
        return torch.nn.functional.normalize(vectors + noise * jitter, dim=-1)

    queries = []
    for query, document in zip(text.float(), relevant, strict=True):
        # Dirichlet(0.5, ..., 0.5) weights: normalised Gamma(0.5) draws, i.e. squared normals / 2, drawn
        # from the seeded generator (torch.distributions would draw from the global one)
        gamma = torch.randn((CLS_VECTORS, query.shape[0]), generator=generator).square()
        weights = gamma / gamma.sum(dim=1, keepdim=True)
        cls = noisy(torch.nn.functional.normalize(weights @ query, dim=-1), 0.6)
        picks = torch.randint(0, document.shape[0], (PATCH_VECTORS,), generator=generator)
        queries.append(torch.cat([query, cls, noisy(document[picks].float(), 1.0)]))
    return torch.stack(queries)


def top_pids(hits: list, k: int) -> list[set[int]]:
    return [{hit.pid for hit in query_hits[:k]} for query_hits in hits]


def recall(found: list[set[int]], reference: list[set[int]]) -> float:
    return sum(len(f & r) / max(1, len(r)) for f, r in zip(found, reference, strict=True)) / len(reference)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def timed_search(searcher, queries: torch.Tensor, k: int, batch: int) -> tuple[list, float, float]:
    """Hits, seconds of the first batch, mean seconds per query of the rest."""
    hits, seconds = [], []
    for start in range(0, len(queries), batch):
        started = time.perf_counter()
        hits.extend(searcher.search(queries[start : start + batch], k))
        seconds.append(time.perf_counter() - started)
    rest = seconds[1:] or seconds
    return hits, seconds[0], sum(rest) / (len(queries) - batch if len(seconds) > 1 else len(queries))


def exact_references(
    vectors: torch.Tensor,
    doclens: torch.Tensor,
    query_sets: dict[str, torch.Tensor],
    k: int,
    timing_queries: int = 20,
) -> tuple[dict[str, list[set[int]]], dict[str, float]]:
    """Exact top-k pids of each query set (cached under data/: minutes at 25k documents) and exact
    search's seconds per query, always measured in this run on the first ``timing_queries`` queries."""
    shapes = "_".join(f"{tuple(q.shape)}" for q in query_sets.values()).replace(" ", "")
    cache = (DATA_DIR / f"exact_v2_{len(doclens)}_{vectors.shape[0]}_{k}_{shapes}").with_suffix(".pt")
    exact = ExactSearcher(vectors, doclens)
    if cache.exists():
        references = torch.load(cache)
    else:
        references = {name: top_pids(exact.search(queries, k), k) for name, queries in query_sets.items()}
        torch.save(references, cache)
    seconds = {}
    for name, queries in query_sets.items():
        started = time.perf_counter()
        exact.search(queries[:timing_queries], k)
        seconds[name] = (time.perf_counter() - started) / min(timing_queries, len(queries))
        print(f"exact brute force [{name}]: {seconds[name] * 1000:.1f} ms/query (batched, float32, this run)")
    return references, seconds


def int8_store_recall(
    vectors: torch.Tensor,
    doclens: torch.Tensor,
    query_sets: dict[str, torch.Tensor],
    references: dict[str, list[set[int]]],
    k: int,
) -> None:
    """Recall@k against exact search of exact search over int8 copies of the vectors (scale max|v| / 127
    per vector, kept in float16): 128 + 2 bytes per vector against the float16 store's 256."""
    scales = (vectors.abs().amax(dim=1, keepdim=True).clamp_min(1e-6) / 127).half().float()
    dequantized = (vectors / scales).round().clamp(-127, 127) * scales
    searcher = ExactSearcher(dequantized, doclens)
    for name, queries in query_sets.items():
        found = top_pids(searcher.search(queries, k), k)
        print(
            f"int8 store (130 B/vector), exact search over it [{name}]: recall@{k} {recall(found, references[name]):.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, nargs="+", default=[3000, 10_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--nbits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--policies", nargs="+", default=list(STORE_POLICIES), choices=list(STORE_POLICIES))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32, help="batch size of the throughput figure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--int8-store",
        action="store_true",
        help="also print how much of the exact top 10 exact search keeps over int8 copies of the vectors "
        "(one scale per vector): the most an int8 re-ranking store could keep",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as load:
        print(f"load average at start: {load.read().split()[:3]}; torch threads {torch.get_num_threads()}")
    for num_documents in args.documents:
        run_size(num_documents, args)


def run_size(num_documents: int, args: argparse.Namespace) -> None:
    collection = load_encoded(num_documents, args.queries)
    vectors, doclens = collection.flat
    text = collection.query_vectors.float()
    relevant = [collection.doc_vectors[pid] for pid in collection.query_pids.tolist()]
    query_sets = {"text": text, "text+image": preflmr_queries(text, relevant)}
    print(
        f"\n== {num_documents} documents, {vectors.shape[0]} vectors, {len(text)} queries "
        f"(text {tuple(text.shape[1:])}, text+image {tuple(query_sets['text+image'].shape[1:])})"
    )
    references, exact_seconds = exact_references(vectors, doclens, query_sets, args.k)
    if args.int8_store:
        int8_store_recall(vectors, doclens, query_sets, references, args.k)
    print(
        "| nbits | store | B/vector | build s | query | recall@10 | cold ms | warm ms | warm / exact "
        f"| batch {args.batch} / batch 1 throughput | default searches exactly |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for nbits in args.nbits:
        for policy in args.policies:
            with tempfile.TemporaryDirectory() as folder:
                started = time.perf_counter()
                index = IndexWriter(nbits=nbits, **STORE_POLICIES[policy]).write(
                    Path(folder) / "index", vectors, doclens
                )
                build = time.perf_counter() - started
                size = folder_bytes(Path(folder) / "index") / index.num_vectors
                label = f"{policy} ({'float16' if index.stores_vectors else 'codes'})"
                for name, queries in query_sets.items():
                    searcher = PlaidSearcher(type(index).load(index.path), exact_when_cheaper=False)
                    hits, cold, warm = timed_search(searcher, queries, args.k, 1)
                    _, _, batched = timed_search(searcher, queries, args.k, args.batch)
                    print(
                        f"| {nbits} | {label} | {size:.0f} | {build:.0f} | {name} "
                        f"| {recall(top_pids(hits, args.k), references[name]):.3f} | {cold * 1000:.1f} "
                        f"| {warm * 1000:.1f} | {warm / exact_seconds[name]:.3f} | {warm / batched:.1f}x "
                        f"| {searcher.exact_is_cheaper(args.k)} |",
                        flush=True,
                    )
    with open("/proc/loadavg") as load:
        print(f"load average at end: {load.read().split()[:3]}")


if __name__ == "__main__":
    main()
