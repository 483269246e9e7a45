"""Hybrid search quality: late interaction alone, BM25 alone, and their fusions, on real text.

Collection: Debian package long descriptions (documents) and their one-line summaries (queries, one
relevant document each), with MiniLM token embeddings projected to 128-d (see debian_collection.py).
The late-interaction side is PLAID over a 2-bit index (full-precision vectors kept for re-ranking);
BM25 (bm25s) runs over the same stored description texts. Figures: success@10 (the query's own
package in the top 10) and MRR@10, plus the mean latency per query (one query at a time).

MiniLM is a sentence-embedding model, not trained for late interaction: its token vectors stand in
for FLMR's, so the late-interaction figures are those of a weak late-interaction model, and the gain
from fusion is larger than it would be with a trained ColBERT / FLMR checkpoint.

Run: python benchmarks/hybrid.py [--documents 25000] [--queries 400] [--weights 0.1 0.2 0.3 0.5 0.7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import torch
from debian_collection import load_collection

from flmr.index import IndexWriter
from flmr.search import HybridSearcher, PlaidSearcher, SearchHit
from flmr.search.hybrid import BM25Index

K = 10


def success_and_mrr(hits: list[list[SearchHit]], relevant: list[int]) -> tuple[float, float]:
    """success@K and MRR@K of ranked hits against one relevant pid per query."""
    found, reciprocal = 0, 0.0
    for query_hits, pid in zip(hits, relevant, strict=True):
        ranked = [hit.pid for hit in query_hits[:K]]
        if pid in ranked:
            found += 1
            reciprocal += 1 / (ranked.index(pid) + 1)
    return found / len(relevant), reciprocal / len(relevant)


def timed(run: Callable[[], list[list[SearchHit]]], num_queries: int) -> tuple[list[list[SearchHit]], float]:
    started = time.perf_counter()
    hits = run()
    return hits, (time.perf_counter() - started) / num_queries * 1000


def bm25_hits(bm25: BM25Index, texts: list[str]) -> list[list[SearchHit]]:
    results = []
    for text in texts:
        top = torch.from_numpy(bm25.scores(text)).topk(K)
        results.append(
            [
                SearchHit(pid=int(pid), score=float(score), rank=rank)
                for rank, (pid, score) in enumerate(zip(top.indices, top.values, strict=True), start=1)
                if score > 0
            ]
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=25_000, help="documents encoded and cached")
    parser.add_argument("--subset", type=int, default=None, help="index only N documents (see below)")
    parser.add_argument("--encoded-queries", type=int, default=400, help="queries encoded and cached")
    parser.add_argument("--queries", type=int, default=400, help="how many of the encoded queries to run")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5, 0.7])
    parser.add_argument("--rrf-weights", type=float, nargs="+", default=[0.3, 0.5])
    args = parser.parse_args()
    torch.manual_seed(0)

    collection = load_collection(args.documents, args.encoded_queries)
    query_pids = [int(pid) for pid in collection.query_pids[: args.queries]]
    # a subset keeps every query's relevant document and fills up with the others in order
    num_documents = min(args.subset or args.documents, args.documents)
    relevant_set = set(query_pids)
    fillers = (pid for pid in range(args.documents) if pid not in relevant_set)
    chosen = sorted(relevant_set | {next(fillers) for _ in range(num_documents - len(relevant_set))})
    new_pid = {old: new for new, old in enumerate(chosen)}
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), collection.doclens.cumsum(0)])
    embeddings = [collection.doc_embeddings[offsets[pid] : offsets[pid + 1]].float() for pid in chosen]
    queries = collection.query_embeddings[: args.queries].float()
    relevant = [new_pid[pid] for pid in query_pids]
    texts = [collection.summaries[pid] for pid in query_pids]
    stored = [{"id": collection.packages[pid], "text": collection.documents[pid]} for pid in chosen]
    num_vectors = sum(len(vectors) for vectors in embeddings)

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        index = IndexWriter(nbits=2).write(f"{folder}/index", embeddings, documents=stored)
        built = time.perf_counter() - started
        started = time.perf_counter()
        bm25 = BM25Index.for_index(index)
        bm25_seconds = time.perf_counter() - started
        print(
            f"{len(chosen)} documents ({num_vectors} vectors), {len(queries)} queries; index built in "
            f"{built:.0f} s, BM25 index in {bm25_seconds:.1f} s\n"
        )

        plaid = PlaidSearcher(index)
        rows = [
            ("late interaction (PLAID)", *timed(lambda: plaid.search(queries, k=K), len(queries))),
            ("BM25", *timed(lambda: bm25_hits(bm25, texts), len(queries))),
        ]
        for fusion, weights in (("linear", args.weights), ("rrf", args.rrf_weights)):
            for weight in weights:
                hybrid = HybridSearcher(plaid, weight=weight, fusion=fusion)
                rows.append(
                    (
                        f"hybrid {fusion}, weight {weight:g}",
                        *timed(lambda h=hybrid: h.search(queries, k=K, query_texts=texts), len(queries)),
                    )
                )

    print(f"| method | success@{K} | MRR@{K} | ms/query |")
    print("|---|---|---|---|")
    for name, hits, milliseconds in rows:
        found, mrr = success_and_mrr(hits, relevant)
        print(f"| {name} | {found:.3f} | {mrr:.3f} | {milliseconds:.0f} |")


if __name__ == "__main__":
    main()
