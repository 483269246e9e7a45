"""Retriever updates: add encodes as the index did, ids stay unique, a resumed index notices edits."""

import pytest
import torch

import flmr
from flmr.index import DuplicateIdError, Index
from flmr.retrieval import Retriever
from helpers import FLMR_TINY

LONG_TEXT = " ".join(f"word{i} alpha beta gamma" for i in range(60))


@pytest.fixture(scope="module")
def retriever():
    return Retriever(flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY).eval())


def test_add_encodes_with_the_recorded_doc_maxlen(retriever, tmp_path):
    index = retriever.index([LONG_TEXT, "short"], tmp_path / "idx", doc_maxlen=16, show_progress=False)
    assert index.encoding == {"max_length": 16, "storage_dtype": "float16"}
    built_length = int(index.doclens[0])
    new = retriever.add(index, [{"id": "copy", "text": LONG_TEXT}])
    assert int(index.doclens[new[0]]) == built_length <= 16
    assert index.document(new[0]).vector_layout[-1]["max_length"] == 16


def test_add_refuses_known_ids_and_upsert_replaces(retriever, tmp_path):
    rows = [{"id": "a", "text": "apples are red"}, {"id": "b", "text": "bananas are yellow"}]
    index = retriever.index(rows, tmp_path / "idx", show_progress=False)
    with pytest.raises(DuplicateIdError, match="'b' is already in the index"):
        retriever.add(index, [{"id": "b", "text": "blueberries are blue"}])
    new = retriever.upsert(tmp_path / "idx", [{"id": "b", "text": "blueberries are blue"}])
    reloaded = Index.load(tmp_path / "idx")
    assert reloaded.pid_of("b") == new[0] == 2 and bool(reloaded.deleted[1])
    hits = retriever.search("bananas are yellow", reloaded, k=3, exact=True)[0]
    assert {h.document.id for h in hits} == {"a", "b"}
    assert all(h.document.text != "bananas are yellow" for h in hits)


def test_a_rerun_after_editing_texts_stores_the_new_texts_vectors(retriever, tmp_path, monkeypatch):
    rows = [{"id": f"d{i}", "text": f"document number {i} about topic {i % 3}"} for i in range(6)]
    path = tmp_path / "idx"
    writer_write = flmr.index.IndexWriter.write

    def interrupted(*args, **kwargs):
        list(args[2])  # encode every chunk, then die before writing the index
        raise KeyboardInterrupt

    monkeypatch.setattr(flmr.index.IndexWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        retriever.index(rows, path, show_progress=False)
    monkeypatch.setattr(flmr.index.IndexWriter, "write", writer_write)
    rows[2] = {"id": "d2", "text": "an edited text that says something else entirely"}
    index = retriever.index(rows, path, show_progress=False)
    fresh = retriever.index(rows, tmp_path / "fresh", show_progress=False)
    assert torch.equal(index.doclens, fresh.doclens)
    everything = torch.arange(index.num_vectors)
    assert torch.equal(index.gather_vectors(everything), fresh.gather_vectors(everything))
