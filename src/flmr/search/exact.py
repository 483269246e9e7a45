"""Exact brute-force MaxSim search: the quality reference, and a mode for small collections."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from flmr.index.codec import ResidualCodec
from flmr.index.index import Index
from flmr.index.inputs import EmbeddingsInput, iter_chunks
from flmr.index.sharded import ShardedIndex
from flmr.runtime import scratch, sized_threads
from flmr.search.base import Searcher, check_k
from flmr.search.errors import SearchError
from flmr.search.filters import MetadataFilter, compile_filter
from flmr.search.maxsim import (
    CPU_CHUNK_VECTORS,
    as_query_batch,
    maxsim_totals,
    nonzero_rows,
    pair_chunks,
    segment_max,
)
from flmr.search.results import SearchHit, make_hits
from flmr.search.settings import SearchSettings, search_settings

DEFAULT_MAX_SCORE_ELEMENTS = 1 << 25  # floats in one (document vectors x query vectors) score block


def score_documents(
    index: Index | ShardedIndex,
    query_rows: torch.Tensor,
    pids: torch.Tensor,
    normalize: bool = True,
    codec: ResidualCodec | None = None,
) -> torch.Tensor:
    """Exact MaxSim of one query's non-zero vectors (q_len, dim) against the vectors of ``pids``.

    See ``score_pairs``, which scores many queries' documents at once. The pids of a sharded index are
    global: each is scored in its shard.

    Example:
        >>> pids = torch.tensor([3, 150])
        >>> scores = score_documents(index, nonzero_rows(Q[0]), pids)  # one score per pid
        >>> by_pid = {hit.pid: hit.score for hit in ExactSearcher(index).search(Q[:1], k=200)[0]}
        >>> torch.allclose(scores, torch.tensor([by_pid[3], by_pid[150]]))  # the scores search ranks by
        True
        >>> sharded = ShardedIndex.load("my_sharded_index")  # the same vectors in 2 shards of 100
        >>> torch.allclose(score_documents(sharded, nonzero_rows(Q[0]), pids), scores)
        True
    """
    pids = pids.long().cpu()
    if isinstance(index, ShardedIndex):
        scores = torch.empty(pids.shape[0], device=query_rows.device)
        shard_of = index.shard_numbers(pids)
        for number, shard in enumerate(index.shards):
            mine = (shard_of == number).nonzero().flatten()
            if mine.numel():
                local = pids[mine] - index.offsets[number]
                scores[mine.to(scores.device)] = score_documents(shard, query_rows, local, normalize)
        return scores
    return score_pairs(index, query_rows[None], torch.zeros_like(pids), pids, normalize, codec)


def score_pairs(
    index: Index,
    queries: torch.Tensor,
    qids: torch.Tensor,
    pids: torch.Tensor,
    normalize: bool = True,
    codec: ResidualCodec | None = None,
) -> torch.Tensor:
    """Exact MaxSim (float32, (n,)) of query ``qids[i]`` of ``queries`` (num_queries, rows, dim) against
    document ``pids[i]``, for pairs sorted by query id.

    The vectors are the index's stored float16 vectors when it keeps them, else the decompressed ones
    (``normalize``: as if re-projected onto the unit sphere). Runs on ``queries``' device (``codec``:
    the index's codec already moved there); all-zero query rows add 0; a document without vectors
    scores -inf. On CPU the pairs are scored a chunk of about ``CPU_CHUNK_VECTORS`` vectors at a
    time (see there).
    """
    device = queries.device
    qids, pids = qids.cpu(), pids.long().cpu()
    positions, owners = index.vector_positions(pids)
    lengths = index.doclens[pids]
    budget = CPU_CHUNK_VECTORS if device.type == "cpu" else None
    if index.stores_vectors:
        stored, codes, centroid_ids = index.gather_vectors(positions).to(device), None, None
    else:
        codec = codec or index.codec.to(device)
        stored = None
        codes = index.gather_codes(positions).to(device)
        centroid_ids = index.gather_centroid_ids(positions).to(device)
    owners = owners.to(device)
    per_pair = []
    for first, end, span in pair_chunks(qids, lengths, budget):
        out = scratch("vectors", (span.stop - span.start, index.dim), device)
        if stored is not None:
            vectors = out.copy_(stored[span])
        else:
            vectors = codec.decompress(codes[span], centroid_ids[span], normalize=False, out=out)
        query = queries[int(qids[first])]
        token_scores = torch.mm(  # (query rows, document vectors)
            query, vectors.T, out=scratch("token_scores", (query.shape[0], vectors.shape[0]), device)
        )
        if normalize and stored is None:  # cheaper than normalising the vectors: scale their scores
            token_scores /= vectors.norm(dim=1).clamp_min(1e-12)
        per_pair.append(segment_max(token_scores, owners[span] - first, end - first, float("-inf")))
    return maxsim_totals(torch.cat(per_pair)) if per_pair else torch.empty(0, device=device)


class ExactSearcher(Searcher):
    """Scores every document with full MaxSim, in memory-bounded blocks, all queries of a batch at once.

    The documents are either an ``Index`` (vectors decompressed block by block, deleted documents
    skipped, stored fields available) or raw embeddings held in memory (a list of per-document tensors,
    or a flat tensor plus ``doclens``).

    Example:
        >>> docs = [torch.nn.functional.normalize(torch.randn(20, 16), dim=-1) for _ in range(50)]
        >>> hits = ExactSearcher(docs).search(docs[7][:4], k=3)[0]
        >>> hits[0].pid, hits[0].rank
        (7, 1)
    """

    def __init__(
        self,
        documents: Index | str | Path | EmbeddingsInput,
        doclens: torch.Tensor | Sequence[int] | None = None,
        *,
        settings: SearchSettings | None = None,
        device: str | torch.device = "cpu",
        normalize_decompressed: bool | None = None,
        max_score_elements: int = DEFAULT_MAX_SCORE_ELEMENTS,
    ) -> None:
        self.settings = search_settings(settings, normalize_decompressed=normalize_decompressed)
        self.device = torch.device(device)
        self.normalize_decompressed = self.settings.normalize_decompressed
        self.max_score_elements = max_score_elements
        self.index: Index | None = None
        if isinstance(documents, (str, Path)):
            documents = Index.load(documents)
        if isinstance(documents, Index):
            self.index = documents
            self.dim = documents.dim
        else:
            chunks = list(iter_chunks(documents, doclens))
            if not chunks:
                raise SearchError("empty collection: no documents were given")
            self.vectors = torch.cat([c.embeddings for c in chunks]).float().to(self.device)
            self.doclens = torch.cat([c.doclens for c in chunks]).long().to(self.device)
            self.doc_offsets = torch.cat([self.doclens.new_zeros(1), self.doclens.cumsum(0)])
            self.dim = self.vectors.shape[1]

    @sized_threads(lambda self, queries, **_: self.work(queries))
    def search(
        self,
        queries: torch.Tensor,
        k: int = 10,
        return_documents: bool = False,
        filter: Mapping[str, Any] | MetadataFilter | None = None,
        *,
        query_texts: Sequence[str] | None = None,
    ) -> list[list[SearchHit]]:
        """Top-``k`` documents by MaxSim for each query of a (num_queries, q_len, dim) batch.

        See ``Searcher.search`` for the arguments and guarantees (``query_texts`` are not read). A
        ``filter`` needs an index; only matching documents are decompressed and scored.
        """
        check_k(k)
        metadata_filter = compile_filter(filter)
        allowed = None
        if metadata_filter is not None:
            if self.index is None:
                raise SearchError("a filter needs an index with a document store, not raw embeddings")
            allowed = metadata_filter.mask(self.index).nonzero().flatten()
        queries = as_query_batch(queries, self.dim).to(self.device)
        rows = [nonzero_rows(query) for query in queries]
        query_rows = torch.cat(rows)
        row_owner = torch.arange(len(rows), device=self.device).repeat_interleave(
            torch.tensor([r.shape[0] for r in rows], device=self.device)
        )
        sum_by_query = torch.nn.functional.one_hot(row_owner, len(rows)).float()  # (rows, queries)
        best_scores = torch.empty(len(rows), 0, device=self.device)
        best_pids = torch.empty(len(rows), 0, dtype=torch.long, device=self.device)
        for pids, vectors, owners in self._blocks(max(1, query_rows.shape[0]), allowed):
            out = scratch("exact_scores", (query_rows.shape[0], vectors.shape[0]), self.device)
            token_scores = torch.mm(query_rows, vectors.T, out=out)  # (query rows, document vectors)
            per_row = segment_max(token_scores, owners, pids.shape[0], float("-inf"))
            empty = (
                torch.isinf(per_row[:, 0]) if per_row.shape[1] else torch.zeros_like(pids, dtype=torch.bool)
            )
            scores = per_row.masked_fill(empty[:, None], 0.0) @ sum_by_query  # (docs, queries)
            scores[empty] = float("-inf")  # documents without vectors are never retrieved
            best_scores, order = torch.cat([best_scores, scores.T], dim=1).topk(
                min(k, best_scores.shape[1] + pids.shape[0]), dim=1
            )
            best_pids = torch.cat([best_pids, pids[None].expand(len(rows), -1)], dim=1).gather(1, order)
        return [  # a query without non-zero vectors matches nothing
            make_hits(best_pids[q].cpu(), best_scores[q].cpu(), self.index, return_documents)
            if len(rows[q])
            else []
            for q in range(len(rows))
        ]

    def work(self, queries: torch.Tensor) -> float:
        """FLOP of scoring ``queries`` against every vector, which size the CPU threads (flmr.runtime)."""
        vectors = int(self.index.doclens.sum()) if self.index is not None else self.vectors.shape[0]
        return 2.0 * queries.shape[-2] * (queries.shape[0] if queries.dim() == 3 else 1) * vectors * self.dim

    def _blocks(
        self, num_query_rows: int, allowed: torch.Tensor | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (pids, vectors, owner of each vector as an index into pids) in bounded blocks.

        A block holds at most ``max_score_elements`` scores (query rows x document vectors) and, on CPU,
        about ``CPU_CHUNK_VECTORS`` vectors, whose products then stay in the caches (one 32-vector text
        query over 3,000 Debian documents: 61 ms per query in such blocks, 126 ms in one block).

        ``allowed``: the only pids to score (live ones), when a filter restricts the search.
        """
        vector_budget = max(1, self.max_score_elements // num_query_rows)
        if self.device.type == "cpu":
            vector_budget = min(vector_budget, CPU_CHUNK_VECTORS)
        if self.index is not None:
            mean_doclen = max(1, self.index.num_vectors // max(1, self.index.num_documents))
            docs_per_block = max(1, vector_budget // mean_doclen)
            runs = (
                self.index.iter_documents(docs_per_block)
                if allowed is None
                else (
                    (0, allowed[start : start + docs_per_block])
                    for start in range(0, len(allowed), docs_per_block)
                )
            )
            for _, pids in runs:
                vectors, owners = self.index.document_vectors(pids, self.normalize_decompressed)
                yield pids.to(self.device), vectors.to(self.device), owners.to(self.device)
            return
        num_docs = self.doclens.shape[0]
        first = 0
        while first < num_docs:
            # the largest run of documents whose vectors fit the budget (always at least one document)
            limit = self.doc_offsets[first] + vector_budget
            last = max(first + 1, int(torch.searchsorted(self.doc_offsets, limit, right=True)) - 1)
            last = min(last, num_docs)
            start, end = int(self.doc_offsets[first]), int(self.doc_offsets[last])
            lengths = self.doclens[first:last]
            owners = torch.arange(last - first, device=self.device).repeat_interleave(lengths)
            yield torch.arange(first, last, device=self.device), self.vectors[start:end], owners
            first = last
