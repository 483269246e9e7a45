import pytest
import torch

from flmr.index import IndexWriter
from flmr.search import ExactSearcher
from flmr.search.exact import score_pairs


def naive_maxsim(query: torch.Tensor, document: torch.Tensor) -> float:
    return sum(float((document @ vector).max()) for vector in query if vector.abs().sum() > 0)


def test_scores_are_maxsim_and_sorted(documents) -> None:
    queries = torch.stack([documents[i][:4] for i in (0, 50, 99)])
    hits = ExactSearcher(documents).search(queries, k=5)
    for query, query_hits in zip(queries, hits, strict=True):
        expected = sorted(((naive_maxsim(query, d), pid) for pid, d in enumerate(documents)), reverse=True)[
            :5
        ]
        assert [h.pid for h in query_hits] == [pid for _, pid in expected]
        torch.testing.assert_close(
            torch.tensor([h.score for h in query_hits]), torch.tensor([s for s, _ in expected])
        )
        assert [h.rank for h in query_hits] == [1, 2, 3, 4, 5]


def test_small_score_blocks_give_the_same_results(documents) -> None:
    queries = torch.stack([documents[i][:4] for i in range(0, 300, 30)])
    flat, doclens = torch.cat(documents), torch.tensor([len(d) for d in documents])
    whole = ExactSearcher(flat, doclens).search(queries, k=7)
    blocked = ExactSearcher(flat, doclens, max_score_elements=3000).search(queries, k=7)
    assert [[h.pid for h in q] for q in whole] == [[h.pid for h in q] for q in blocked]


def test_zero_query_vectors_are_ignored(documents) -> None:
    query = documents[3][:5]
    padded = torch.cat([query, torch.zeros(6, 16)])
    searcher = ExactSearcher(documents)
    assert searcher.search(query, k=5) == searcher.search(padded, k=5)


def test_documents_without_vectors_are_never_returned(documents) -> None:
    with_empty = [torch.empty(0, 16), *documents[:5]]
    hits = ExactSearcher(with_empty).search(documents[0][:3], k=10)[0]
    assert len(hits) == 5 and 0 not in {h.pid for h in hits}


def test_exact_over_an_index_skips_deleted_and_returns_documents(
    tmp_path, writer, documents, stored_fields
) -> None:
    index = writer.write(tmp_path / "index", documents, documents=stored_fields)
    query = documents[42][:6]
    assert ExactSearcher(index).search(query, k=1)[0][0].pid == 42
    index.delete([42])
    hits = ExactSearcher(index).search(query, k=300, return_documents=True)[0]
    assert 42 not in {h.pid for h in hits} and len(hits) == 299
    assert hits[0].document.id == f"doc-{hits[0].pid}"


def test_query_dim_must_match(documents) -> None:
    with pytest.raises(ValueError, match=r"\(num_queries, q_len, 16\)"):
        ExactSearcher(documents).search(torch.randn(2, 4, 8))


@pytest.mark.parametrize("store_vectors", [True, False])
def test_score_pairs_of_several_queries_are_their_maxsim(documents, tmp_path, store_vectors) -> None:
    """Pairs of 3 queries (one without pairs) against repeated and empty documents, in one call."""
    documents = [*documents[:40], torch.empty(0, documents[0].shape[1])]
    index = IndexWriter(nbits=2, num_partitions=16, store_vectors=store_vectors).write(
        tmp_path / "i", documents
    )
    queries = torch.stack([documents[pid][:4] for pid in (3, 7, 9)])
    qids, pids = torch.tensor([0, 0, 0, 2, 2]), torch.tensor([3, 5, 40, 3, 39])
    scores = score_pairs(index, queries, qids, pids, normalize=False)
    vectors = {pid: index.document_vectors(torch.tensor([pid]), normalize=False)[0] for pid in (3, 5, 39)}
    expected = [(queries[q] @ vectors[p].T).amax(dim=1).sum() for q, p in ((0, 3), (0, 5), (2, 3), (2, 39))]
    assert scores[2] == float("-inf")  # document 40 has no vectors
    assert scores[[0, 1, 3, 4]].tolist() == pytest.approx(torch.stack(expected).tolist(), abs=1e-5)


@pytest.mark.parametrize("store_vectors", [True, False])
def test_chunked_scoring_gives_the_scores_of_one_piece(
    documents, tmp_path, monkeypatch, store_vectors
) -> None:
    """Re-ranking and exact search score CPU_CHUNK_VECTORS vectors at a time; the chunks do not change scores."""
    index = IndexWriter(nbits=2, num_partitions=16, store_vectors=store_vectors).write(
        tmp_path / "i", documents[:60]
    )
    queries = torch.stack([documents[pid][:5] for pid in (3, 7, 9)])
    qids = torch.tensor([0] * 25 + [1] * 3 + [2] * 30)
    pids = torch.cat([torch.arange(25), torch.tensor([4, 50, 51]), torch.arange(30, 60)])
    monkeypatch.setattr("flmr.search.exact.CPU_CHUNK_VECTORS", 10**9)
    whole = score_pairs(index, queries, qids, pids)
    exact_hits = ExactSearcher(index).search(queries, k=20)
    for budget in (1, 7, 40):
        monkeypatch.setattr("flmr.search.exact.CPU_CHUNK_VECTORS", budget)
        torch.testing.assert_close(score_pairs(index, queries, qids, pids), whole, rtol=0, atol=1e-6)
        chunked_hits = ExactSearcher(index).search(queries, k=20)
        assert [[h.pid for h in q] for q in chunked_hits] == [[h.pid for h in q] for q in exact_hits]
