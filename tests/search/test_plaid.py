import threading

import pytest
import torch

from flmr.index import Index, IndexWriter
from flmr.search import ExactSearcher, PlaidSearcher
from flmr.search import plaid as plaid_module
from flmr.search.maxsim import packed_queries


@pytest.fixture(scope="module")
def easy_index(tmp_path_factory, make_documents) -> tuple[Index, list[torch.Tensor]]:
    """Well separated topics, 4-bit residuals: PLAID should find exactly the exact top-k."""
    documents = make_documents(400, num_topics=64, noise=0.1, seed=3)
    writer = IndexWriter(nbits=4, num_partitions=64, kmeans_iterations=10)
    index = writer.write(
        tmp_path_factory.mktemp("plaid") / "index", documents, documents=[{"id": str(i)} for i in range(400)]
    )
    return index, documents


def queries_from(documents: list[torch.Tensor], pids: range, length: int = 5) -> torch.Tensor:
    return torch.stack([documents[pid][:length] for pid in pids])


def pids_of(hits) -> list[list[int]]:
    return [[hit.pid for hit in query_hits] for query_hits in hits]


def test_plaid_finds_the_exact_top_k_on_easy_collection(easy_index) -> None:
    index, documents = easy_index
    queries = queries_from(documents, range(0, 400, 20), length=5)
    plaid = PlaidSearcher(index, ndocs=128, exact_when_cheaper=False).search(queries, k=5)
    exact = ExactSearcher(index).search(queries, k=20)  # the same stored vectors, every document
    found = sum(len({h.pid for h in p} & {h.pid for h in e[:5]}) for p, e in zip(plaid, exact, strict=True))
    assert found / (5 * len(queries)) >= 0.95
    for plaid_hits, exact_hits in zip(plaid, exact, strict=True):
        exact_scores = {h.pid: h.score for h in exact_hits}
        assert plaid_hits[0].pid == exact_hits[0].pid
        for hit in plaid_hits:  # a found document scores exactly as in exact search
            assert hit.score == pytest.approx(exact_scores[hit.pid], abs=1e-5)


def test_scores_are_exact_maxsim_over_the_stored_vectors(easy_index) -> None:
    index, documents = easy_index
    assert index.stores_vectors
    query = documents[11][:4]
    hits = PlaidSearcher(index).search(query, k=3)[0]
    assert hits[0].pid == 11
    for hit in hits:
        float16_vectors = documents[hit.pid].half().float()
        assert hit.score == pytest.approx(float((query @ float16_vectors.T).amax(dim=1).sum()), abs=1e-5)


def test_compressed_only_index_scores_by_decompressed_vectors(tmp_path, make_documents) -> None:
    documents = make_documents(200, num_topics=32, noise=0.1, seed=5)
    index = IndexWriter(nbits=2, num_partitions=32, store_vectors=False).write(tmp_path / "index", documents)
    assert not index.stores_vectors
    assert not (tmp_path / "index" / "segments" / "000000" / "vectors.npy").exists()
    query = documents[11][:4]
    for hit in PlaidSearcher(index).search(query, k=3)[0]:
        vectors, _ = index.decompress(torch.tensor([hit.pid]))
        assert hit.score == pytest.approx(float((query @ vectors.T).amax(dim=1).sum()), abs=1e-5)
    with pytest.raises(ValueError, match="only compressed vectors"):
        index.gather_vectors(torch.arange(3))


def test_added_documents_keep_their_vectors_too(tmp_path, make_documents) -> None:
    documents = make_documents(120, num_topics=16, noise=0.1, seed=6)
    index = IndexWriter(nbits=2, num_partitions=16).write(tmp_path / "index", documents[:100])
    index.add(documents[100:])
    vectors, owners = index.document_vectors(torch.tensor([5, 110]))
    expected = torch.cat([documents[5], documents[110]]).half().float()
    assert torch.equal(vectors, expected)
    assert owners.tolist() == [0] * len(documents[5]) + [1] * len(documents[110])


def test_top_n_does_not_depend_on_k(easy_index) -> None:
    index, documents = easy_index
    searcher = PlaidSearcher(index, ndocs=32, exact_when_cheaper=False)
    queries = queries_from(documents, range(5, 400, 40))
    small, large = searcher.search(queries, k=3), searcher.search(queries, k=8)
    assert [q[:3] for q in pids_of(large)] == pids_of(small)


def test_zero_query_vectors_are_ignored(easy_index) -> None:
    index, documents = easy_index
    searcher = PlaidSearcher(index)
    query = documents[7][:5]
    padded = torch.cat([torch.zeros(3, 16), query, torch.zeros(20, 16)])
    assert searcher.search(query, k=5) == searcher.search(padded, k=5)
    assert searcher.search(torch.zeros(4, 16), k=5) == [[]]


def test_only_the_first_32_vectors_generate_candidates_with_text_first_32(easy_index) -> None:
    index, documents = easy_index
    text = -documents[0][0].expand(32, -1)  # a "text" part pointing away from document 123
    query = torch.cat([text, documents[123][:4]])  # only the "image" part points at it
    packed, counts = packed_queries(query[None])

    def candidates(option: str) -> set[int]:
        searcher = PlaidSearcher(index, candidate_query_vectors=option, ncells=1, ndocs=4)
        searcher._sync_with_index()
        valid = torch.arange(packed.shape[1])[None] < counts[:, None]
        _, pids = searcher._candidates(packed @ searcher._centroids_t, valid, None, wanted=1)
        return set(pids.tolist())

    assert 123 in candidates("all")
    assert 123 not in candidates("text_first_32")


def test_deleted_documents_never_come_back_and_added_ones_do(tmp_path, writer, documents) -> None:
    index = writer.write(tmp_path / "index", documents)
    searcher = PlaidSearcher(index)
    query = documents[8][:6]
    assert searcher.search(query, k=1)[0][0].pid == 8
    index.delete([8])
    assert 8 not in {h.pid for h in searcher.search(query, k=50)[0]}
    new_pids = index.add([documents[8]])
    assert searcher.search(query, k=1)[0][0].pid == new_pids[0]


def test_documents_are_returned_when_asked(easy_index) -> None:
    index, documents = easy_index
    hit = PlaidSearcher(index).search(documents[77][:5], k=1, return_documents=True)[0][0]
    assert hit.pid == 77 and hit.document.id == "77" and hit.rank == 1


def test_batched_queries_match_single_queries(easy_index) -> None:
    index, documents = easy_index
    for exact_when_cheaper in (True, False):  # the exact path for this small index, and the PLAID stages
        searcher = PlaidSearcher(index, exact_when_cheaper=exact_when_cheaper, queries_per_pass=8)
        queries = queries_from(documents, range(3, 400, 50))
        batched, single = searcher.search(queries, k=4), [searcher.search(q, k=4)[0] for q in queries]
        assert pids_of(batched) == pids_of(single)
        for batch_hits, single_hits in zip(batched, single, strict=True):
            # one matrix product for the batch or one per query: the same sums up to rounding
            assert [h.score for h in batch_hits] == pytest.approx([h.score for h in single_hits], abs=1e-5)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"candidate_query_vectors": "image"}, "candidate_query_vectors"), ({"ncells": 0}, "ncells")],
)
def test_bad_options_are_rejected(easy_index, options, message) -> None:
    with pytest.raises(ValueError, match=message):
        PlaidSearcher(easy_index[0], **options)


@pytest.mark.parametrize("exact_when_cheaper", [True, False])
def test_k_hits_whenever_k_live_documents_exist(tmp_path, make_documents, exact_when_cheaper) -> None:
    documents = make_documents(300, num_topics=40, noise=0.2, seed=8)
    tiny = IndexWriter(nbits=2, num_partitions=4, kmeans_iterations=4).write(tmp_path / "tiny", documents[:5])
    searcher = PlaidSearcher(tiny, exact_when_cheaper=exact_when_cheaper)
    assert len(searcher.search(documents[0][:3], k=5)[0]) == 5
    assert len(searcher.search(documents[0][:3], k=9)[0]) == 5

    index = IndexWriter(nbits=2, num_partitions=32, kmeans_iterations=4).write(tmp_path / "index", documents)
    searcher = PlaidSearcher(index, exact_when_cheaper=exact_when_cheaper, ndocs=64)
    queries = torch.stack([documents[pid][:4] for pid in (0, 150)])
    assert [len(hits) for hits in searcher.search(queries, k=200)] == [200, 200]
    index.delete(list(range(0, 300, 3)))  # 200 live documents left
    for hits in searcher.search(queries, k=250):
        assert len(hits) == 200 and all(hit.pid % 3 for hit in hits)


def test_small_collections_are_searched_exactly(easy_index, tmp_path, make_documents) -> None:
    index, documents = easy_index
    searcher = PlaidSearcher(index)
    assert searcher.exact_is_cheaper(10)
    queries = queries_from(documents, range(1, 400, 37))
    assert searcher.search(queries, k=7) == ExactSearcher(index).search(queries, k=7)
    # the same collection with far fewer documents touched per query: the PLAID stages are cheaper
    assert not PlaidSearcher(index, ndocs=8).exact_is_cheaper(10)


def test_exact_is_cheaper_counts_at_most_the_live_documents(easy_index) -> None:
    """Centroid interaction over min(ndocs, live) documents, re-ranking of min(ndocs // 2, live)."""
    index, _ = easy_index  # 400 live documents
    mean_length = index.num_vectors / index.num_documents

    def stages_cost(documents: int) -> float:
        return plaid_module.EXACT_COST_RATIO * (index.num_partitions + documents * mean_length)

    # ndocs=480: 400 + 240 documents touched, not 480 + 240: the stages are the cheaper
    assert index.num_vectors > stages_cost(400 + 240)
    assert not PlaidSearcher(index, ndocs=480).exact_is_cheaper(10)
    # ndocs=1,000: 400 + 400 documents touched, each vector twice: exact search is the cheaper
    assert index.num_vectors <= stages_cost(400 + 400)
    assert PlaidSearcher(index, ndocs=1000).exact_is_cheaper(10)


def test_candidate_probing_stops_once_every_document_is_a_candidate(easy_index, monkeypatch) -> None:
    """Wanting more candidates than the collection has does not double the cells probed up to all of them."""
    index, documents = easy_index
    rounds = []
    original = PlaidSearcher._list_members
    monkeypatch.setattr(
        PlaidSearcher, "_list_members", lambda self, *args: rounds.append(1) or original(self, *args)
    )
    searcher = PlaidSearcher(index, ncells=8, ndocs=10_000, exact_when_cheaper=False)  # wants 5,000
    query = torch.stack([documents[pid][0] for pid in range(0, 400, 5)])  # 80 vectors: 5 of 64 cells each
    hits = searcher.search(query, k=400)[0]
    assert len(rounds) == 1 and len(hits) == 400


def test_recall_against_exact_with_mask_expanded_queries(tmp_path, make_documents) -> None:
    """Queries shaped like query()'s: a few token vectors, the rest [MASK] expansions near their mean."""
    documents = make_documents(1500, num_topics=200, noise=0.5, seed=9)
    index = IndexWriter(nbits=2, kmeans_iterations=10).write(tmp_path / "index", documents)
    generator = torch.Generator().manual_seed(0)
    queries = []
    for pid in range(0, 1500, 25):
        tokens = documents[pid][:5]  # every document has at least 5 vectors
        mean = tokens.mean(dim=0, keepdim=True).expand(27, -1)
        masks = torch.nn.functional.normalize(mean + 0.3 * torch.randn(27, 16, generator=generator), dim=-1)
        queries.append(torch.cat([tokens, masks]))
    queries = torch.stack(queries)
    plaid = PlaidSearcher(index, exact_when_cheaper=False).search(queries, k=10)
    exact = ExactSearcher(index).search(queries, k=10)
    found = sum(len(set(pids_of([p])[0]) & set(pids_of([e])[0])) for p, e in zip(plaid, exact, strict=True))
    assert found / (10 * len(queries)) >= 0.95


@pytest.mark.parametrize(("nbits", "keeps_float16"), [(2, True), (4, True), (8, True)])
def test_default_storage_keeps_float16_at_every_nbits(tmp_path, documents, nbits, keeps_float16) -> None:
    index = IndexWriter(nbits=nbits, num_partitions=16, kmeans_iterations=4).write(tmp_path / "i", documents)
    assert index.stores_vectors == keeps_float16
    assert (tmp_path / "i" / "segments" / "000000" / "vectors.npy").exists() == keeps_float16


@pytest.mark.parametrize("prune_above", [0, 1000])
def test_pruned_stage_runs_only_for_many_candidates(easy_index, monkeypatch, prune_above) -> None:
    """Pruned or not, the same exact top-k comes back; the pruned stage runs only past the bound."""
    index, documents = easy_index
    monkeypatch.setattr(plaid_module, "PRUNED_STAGE_ABOVE", prune_above)
    calls = []
    original = PlaidSearcher._pruned_scores
    monkeypatch.setattr(
        PlaidSearcher, "_pruned_scores", lambda self, *args: calls.append(1) or original(self, *args)
    )
    queries = queries_from(documents, range(0, 400, 40))
    plaid = PlaidSearcher(index, ndocs=64, exact_when_cheaper=False).search(queries, k=5)
    assert bool(calls) == (prune_above == 0)
    assert pids_of(plaid) == pids_of(ExactSearcher(index).search(queries, k=5))


def test_queries_of_many_vectors_probe_fewer_cells_each_and_still_fill_k(easy_index) -> None:
    index, documents = easy_index
    searcher = PlaidSearcher(index, ncells=4, ndocs=64, exact_when_cheaper=False, queries_per_pass=8)
    assert searcher.cells_per_vector(torch.tensor([5, 32, 128]), 64).tolist() == [4, 4, 2]
    long_query = torch.cat([documents[pid][:5] for pid in range(100, 126)])  # 130 vectors
    short_query = torch.nn.functional.pad(documents[7][:5], (0, 0, 0, 125))  # 5 vectors, zero padded
    batched = searcher.search(torch.stack([long_query, short_query]), k=50)
    single = [searcher.search(query, k=50)[0] for query in (long_query, short_query)]
    assert pids_of(batched) == pids_of(single) and [len(hits) for hits in batched] == [50, 50]
    assert batched[1][0].pid == 7


def test_passes_of_a_batch_run_side_by_side_on_cpu_threads(easy_index, monkeypatch) -> None:
    index, documents = easy_index
    searcher = PlaidSearcher(index, exact_when_cheaper=False)  # one query per pass on CPU
    queries = queries_from(documents, range(5, 400, 40))
    threads_before = torch.get_num_threads()
    monkeypatch.setenv("FLMR_NUM_THREADS", "1")
    sequential = searcher.search(queries, k=7)
    threads_of_passes = set()
    search_batch = searcher._search_batch

    def recording(*args, **kwargs):
        threads_of_passes.add(threading.current_thread().name)
        return search_batch(*args, **kwargs)

    monkeypatch.setattr(searcher, "_search_batch", recording)
    monkeypatch.setenv("FLMR_NUM_THREADS", "2")
    side_by_side = searcher.search(queries, k=7)
    assert threads_of_passes and threads_of_passes <= {"flmr-plaid_0", "flmr-plaid_1"}  # the pool ran them
    assert pids_of(side_by_side) == pids_of(sequential)
    assert [h.score for hits in side_by_side for h in hits] == [h.score for hits in sequential for h in hits]
    assert torch.get_num_threads() == threads_before  # the passes' single-threaded setting is undone


@pytest.mark.parametrize("grow", [True, False])
def test_ncells_and_ndocs_grow_with_the_live_collection(easy_index, monkeypatch, grow) -> None:
    index, documents = easy_index  # 400 documents
    monkeypatch.setattr(plaid_module, "GROWTH_FROM_DOCUMENTS", 100)  # so 400 documents give g = 2
    searcher = PlaidSearcher(index, ncells=4, ndocs=64, grow_with_collection=grow, exact_when_cheaper=False)
    hits = searcher.search(documents[9][:5], k=5)[0]
    assert hits[0].pid == 9 and len(hits) == 5
    assert (searcher.budget_growth(), searcher.ncells, searcher.ndocs) == (
        (2.0, 8, 181) if grow else (1.0, 4, 64)
    )


@pytest.mark.parametrize("chunk_scores", [1, 50, 1 << 24])
def test_centroid_interaction_is_maxsim_over_every_vectors_centroid(
    easy_index, monkeypatch, chunk_scores
) -> None:
    """Read once per distinct centroid of a document, in chunks of any size, the scores equal those over
    all its vectors."""
    index, documents = easy_index
    monkeypatch.setattr(plaid_module, "INTERACTION_CHUNK_SCORES", chunk_scores)
    searcher = PlaidSearcher(index, exact_when_cheaper=False)
    searcher._sync_with_index()
    queries = queries_from(documents, (3, 77))
    centroid_scores = queries @ searcher._centroids_t  # (queries, rows, partitions)
    by_column = centroid_scores.transpose(0, 1).reshape(queries.shape[1], -1)
    qids, pids = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([3, 50, 399, 0, 77])
    scores = searcher._centroid_interaction(by_column, qids, pids)
    for score, query, pid in zip(scores.tolist(), qids.tolist(), pids.tolist(), strict=True):
        positions, _ = index.vector_positions(torch.tensor([pid]))
        every = index.gather_centroid_ids(positions)
        assert score == pytest.approx(float(centroid_scores[query][:, every].amax(dim=1).sum()), abs=1e-5)
