"""The service follows other processes' commits to its index within the refresh delay."""

import json

import pytest
from service_helpers import load_retriever

from flmr.data import SAMPLE_COLLECTION
from flmr.index import Index
from flmr.serving.engine import DocumentNotFound, SearchEngine, SearchQuery
from flmr.serving.settings import ServiceSettings


def test_the_engine_serves_other_writers_adds_and_deletes(tmp_path):
    retriever = load_retriever()
    rows = [json.loads(line) for line in SAMPLE_COLLECTION.read_text().splitlines()[:8]]
    retriever.index(rows, tmp_path / "index", show_progress=False, doc_maxlen=64)
    engine = SearchEngine(
        retriever, Index.load(tmp_path / "index"), ServiceSettings(index_refresh_seconds=0, exact=True)
    )
    query = "zebra quantum marmalade orchestra xylophone"
    other = Index.load(tmp_path / "index")  # another writer (a process, in effect: its own handle)
    [pid] = retriever.add(other, [{"id": "new", "text": query}])
    assert engine.pid_of("new") == pid
    assert engine.search_batch([SearchQuery(query, k=1)])[0][0].document.id == "new"
    other.delete([pid])
    with pytest.raises(DocumentNotFound):
        engine.document(pid)
    assert all(hit.pid != pid for hit in engine.search_batch([SearchQuery(query, k=9)])[0])


def test_the_engine_keeps_its_generation_until_the_refresh_delay_passed(tmp_path):
    retriever = load_retriever()
    rows = [json.loads(line) for line in SAMPLE_COLLECTION.read_text().splitlines()[:8]]
    retriever.index(rows, tmp_path / "index", show_progress=False, doc_maxlen=64)
    index = Index.load(tmp_path / "index", auto_refresh=None)
    engine = SearchEngine(retriever, index, ServiceSettings(index_refresh_seconds=3600))
    engine.search_batch([SearchQuery("warm", k=1)])
    retriever.add(Index.load(tmp_path / "index"), [{"id": "late", "text": "a late document"}])
    with pytest.raises(DocumentNotFound):
        engine.pid_of("late")
    assert index.refresh() and engine.pid_of("late") == 8
