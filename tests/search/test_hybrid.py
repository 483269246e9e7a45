"""Hybrid (MaxSim + BM25) search on real MiniLM token embeddings of the sample collection."""

import pytest
import torch
from sample_embeddings import QUERY_TEXTS, build_sample_index, encode_queries, sample_records

from flmr.index import Index
from flmr.search import ExactSearcher, PlaidSearcher
from flmr.search.hybrid import BM25Index, HybridSearcher, competition_ranks, fuse, min_max
from flmr.search.maxsim import nonzero_rows

TEXTS = [*QUERY_TEXTS, "Which editor has WordStar key sequences?", "zzzunknownword"]


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory) -> Index:
    return build_sample_index(tmp_path_factory.mktemp("hybrid") / "index")


@pytest.fixture(scope="module")
def queries() -> torch.Tensor:
    return encode_queries(TEXTS)


def pid_of(document_id: str) -> int:
    return [record["id"] for record in sample_records()].index(document_id)


def test_fusion_arithmetic_matches_a_hand_computation() -> None:
    late, lexical = torch.tensor([10.0, 8.0, 6.0, 8.0]), torch.tensor([0.0, 3.0, 6.0, 0.0])
    # min-max: late -> [1, .5, 0, .5], lexical -> [0, .5, 1, 0]
    torch.testing.assert_close(fuse(late, lexical, 0.25), torch.tensor([0.75, 0.5, 0.25, 0.375]))
    # ranks: late [1, 2, 4, 2] (tie shares rank 2), lexical [3, 2, 1, 3]
    expected = torch.tensor(
        [0.7 / 61 + 0.3 / 63, 0.7 / 62 + 0.3 / 62, 0.7 / 64 + 0.3 / 61, 0.7 / 62 + 0.3 / 63]
    )
    torch.testing.assert_close(fuse(late, lexical, 0.3, "rrf"), expected)
    assert competition_ranks(late).tolist() == [1, 2, 4, 2]
    assert min_max(torch.tensor([5.0, 5.0])).tolist() == [0.0, 0.0]  # no preference, no contribution


def test_bm25_ranks_the_document_with_a_rare_exact_term_first(sample_index, queries) -> None:
    scores = BM25Index.for_index(sample_index).scores("Which editor has WordStar key sequences?")
    joe = pid_of("joe")  # the only text that says "WordStar"
    assert int(scores.argmax()) == joe
    hit = HybridSearcher(ExactSearcher(sample_index), weight=1.0).search(
        queries[-2:-1], k=1, query_texts=TEXTS[-2:-1]
    )[0][0]
    assert hit.pid == joe and hit.bm25_score == pytest.approx(float(scores[joe]))


@pytest.mark.parametrize("fusion", ["linear", "rrf"])
def test_weight_zero_gives_the_late_interaction_results(sample_index, queries, fusion) -> None:
    for searcher in (ExactSearcher(sample_index), PlaidSearcher(sample_index)):
        plain = searcher.search(queries, k=10)
        hybrid = HybridSearcher(searcher, weight=0.0, fusion=fusion).search(queries, k=10, query_texts=TEXTS)
        assert [[h.pid for h in q] for q in hybrid] == [[h.pid for h in q] for q in plain]
        for plain_hits, hybrid_hits in zip(plain, hybrid, strict=True):
            torch.testing.assert_close(
                [h.late_interaction_score for h in hybrid_hits], [h.score for h in plain_hits]
            )


@pytest.mark.parametrize("fusion", ["linear", "rrf"])
def test_weight_one_gives_the_bm25_order(sample_index, queries, fusion) -> None:
    bm25 = BM25Index.for_index(sample_index)
    hybrid = HybridSearcher(PlaidSearcher(sample_index), weight=1.0, fusion=fusion).search(
        queries, k=5, query_texts=TEXTS
    )
    for text, hits in zip(TEXTS[:-1], hybrid, strict=False):
        scores = torch.from_numpy(bm25.scores(text))
        assert (scores > 0).sum() >= 5 and len(set(scores.topk(6).values.tolist())) == 6  # no ties
        assert [h.pid for h in hits] == scores.topk(5).indices.tolist()


def test_a_query_without_known_terms_falls_back_to_late_interaction(sample_index, queries) -> None:
    plain = PlaidSearcher(sample_index).search(queries[-1:], k=5)[0]
    hits = HybridSearcher(PlaidSearcher(sample_index), weight=0.7).search(
        queries[-1:], k=5, query_texts=TEXTS[-1:]
    )[0]
    assert [h.pid for h in hits] == [h.pid for h in plain]
    assert all(h.bm25_score == 0.0 for h in hits)


def test_fused_scores_follow_the_formula_over_the_whole_candidate_union(sample_index, queries) -> None:
    # depth = all documents: the candidates are the whole collection, so min and max are global
    hybrid = HybridSearcher(ExactSearcher(sample_index), weight=0.4, depth=200)
    hits = hybrid.search(queries[:3], k=8, query_texts=TEXTS[:3])
    all_late = ExactSearcher(sample_index).search(queries[:3], k=200)
    bm25 = BM25Index.for_index(sample_index)
    for text, query_hits, late_hits in zip(TEXTS, hits, all_late, strict=False):
        late = {h.pid: h.score for h in late_hits}
        lexical = torch.from_numpy(bm25.scores(text)).double()
        low, high = min(late.values()), max(late.values())
        for hit in query_hits:
            expected = 0.6 * (late[hit.pid] - low) / (high - low) + 0.4 * (
                lexical[hit.pid] - lexical.min()
            ) / (lexical.max() - lexical.min())
            assert hit.score == pytest.approx(float(expected), abs=1e-5)
        assert [h.score for h in query_hits] == sorted((h.score for h in query_hits), reverse=True)


def test_bm25_only_candidates_get_exact_maxsim(sample_index, queries) -> None:
    # a tiny late-interaction depth: most fused candidates come from BM25 alone
    hybrid = HybridSearcher(PlaidSearcher(sample_index), weight=0.9, depth=3)
    for query, hits in zip(queries, hybrid.search(queries, k=10, query_texts=TEXTS), strict=True):
        assert len(hits) == 10
        for hit in hits:
            vectors, _ = sample_index.document_vectors(torch.tensor([hit.pid]))
            expected = float((nonzero_rows(query) @ vectors.T).amax(dim=1).sum())
            assert hit.late_interaction_score == pytest.approx(expected, abs=1e-4)


def test_hybrid_search_honours_filters_and_deletes(tmp_path, queries) -> None:
    index = build_sample_index(tmp_path / "index")
    hybrid = HybridSearcher(PlaidSearcher(index), weight=0.5)
    first = hybrid.search(queries[:1], k=5, query_texts=TEXTS[:1], filter={"lang": "en"})[0]
    index.delete([first[0].pid])
    hits = hybrid.search(
        queries[:1], k=20, query_texts=TEXTS[:1], filter={"lang": "en"}, return_documents=True
    )[0]
    assert len(hits) == 20 and first[0].pid not in {h.pid for h in hits}
    assert all(h.document.metadata["lang"] == "en" for h in hits)
    # an added document is found by its text: the BM25 index is rebuilt after an add
    new = index.add(
        [torch.nn.functional.normalize(torch.randn(4, 384), dim=-1)], documents=[{"text": "qwertyzz"}]
    )
    hits = HybridSearcher(ExactSearcher(index), weight=1.0).search(
        queries[:1], k=1, query_texts=["qwertyzz"]
    )[0]
    assert hits[0].pid == new[0]


def test_bad_hybrid_arguments_are_refused(sample_index, queries) -> None:
    searcher = ExactSearcher(sample_index)
    with pytest.raises(ValueError, match=r"hybrid weight must be in \[0, 1\], got 1.5"):
        HybridSearcher(searcher, weight=1.5)
    with pytest.raises(ValueError, match="fusion must be one of"):
        HybridSearcher(searcher, fusion="max")
    with pytest.raises(ValueError, match="2 query embeddings but 1 query texts"):
        HybridSearcher(searcher).search(queries[:2], query_texts=TEXTS[:1])
