"""Docstring examples of ``src/flmr`` as tests, and the names they use, built once from the tiny checkpoint.

``python -m pytest`` runs the examples of every module under ``src/flmr`` (``testpaths`` in
pyproject.toml; not ``--doctest-modules``, which would also collect the tests' conftest files as
modules). Each example runs in
a fresh temporary folder that holds ``my_index`` (the shipped sample collection indexed with the tiny
checkpoint) and ``my_checkpoint`` (the tiny checkpoint), and sees these names:

- ``model``, ``checkpoint``: the tiny FLMR model (random weights, 16-dim vectors) and its folder;
- ``processor``, ``image_processor``: its image processor (32x32 pixels);
- ``retriever``: a [`Retriever`] on ``model``; ``index``: ``my_index`` loaded;
- ``Q`` / ``query_embeddings``: (2, 32, 16) vectors of the first two ``SAMPLE_QUERIES``;
- ``docs``, ``doc_embeddings``: the first 8 sample documents and their (n_tokens, 16) vectors.

An example that names ``my_embeddings``, ``my_sharded_index`` or ``m2kr_local`` also finds that
folder (each is built once, when an example first needs it):

- ``my_embeddings``: the sample collection encoded by ``model`` in embedding parts of 100 documents
  (as ``flmr.distributed``'s encoding writes them, here without Ray);
- ``my_sharded_index``: the 2-shard index built from them in-process (the same vectors as ``my_index``);
- ``m2kr_local``: an M2KR-layout folder (parquet) with one task, ``EVQA``, whose ``test`` split asks
  ``what is <package>?`` for the first 8 sample documents against a corpus of the first 20
  (``test_passages``).

The tiny model's rankings mean nothing, so examples show shapes, types and invariants of what it
computes, never a claimed ranking.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule  # pytest exports DoctestItem but not its collector

SOURCE = Path(__file__).resolve().parent / "src" / "flmr"

# Examples never reach the model hub: everything they load is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE_DOCS = 8  # documents in ``docs`` / ``doc_embeddings``, queries of ``m2kr_local``
M2KR_PASSAGES = 20  # the corpus of ``m2kr_local``
PART_DOCS = 100  # documents per part of ``my_embeddings``
SHARDED_FOLDERS = ("my_embeddings", "my_sharded_index")  # copied only for the examples that name them


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """The examples of each module of ``src/flmr`` but ``__main__.py`` (``--doctest-modules`` collects
    them itself)."""
    if (
        file_path.suffix == ".py"
        and file_path.name != "__main__.py"
        and SOURCE in file_path.parents
        and not parent.config.option.doctestmodules
    ):
        return DoctestModule.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def _doctest_world(tmp_path_factory) -> dict:
    """Build the tiny checkpoint, the sample index and the shared names once (a few seconds)."""
    from flmr import Retriever
    from flmr.data import SAMPLE_COLLECTION, SAMPLE_QUERIES
    from flmr.encoding import DocumentEncoder, read_collection
    from flmr.model.image_processing import load_image_processor
    from flmr.model.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("doctest-world")
    checkpoint = write_tiny_checkpoint(root / "my_checkpoint")
    retriever = Retriever.from_pretrained(checkpoint)
    retriever.index(SAMPLE_COLLECTION, root / "my_index", show_progress=False)
    docs = read_collection(SAMPLE_COLLECTION)[:SAMPLE_DOCS]
    processor = load_image_processor(retriever.model.config)
    Q = retriever.encode_queries(SAMPLE_QUERIES[:2])
    return {
        "root": root,
        "names": {
            "model": retriever.model,
            "checkpoint": checkpoint,
            "processor": processor,
            "image_processor": processor,
            "retriever": retriever,
            "Q": Q,
            "query_embeddings": Q,
            "docs": docs,
            "doc_embeddings": DocumentEncoder(retriever.model, show_progress=False).encode(docs),
        },
    }


@pytest.fixture(scope="session")
def _doctest_sharded(_doctest_world, tmp_path_factory) -> Path:
    """``my_embeddings``: the sample collection encoded by ``model`` as the parts distributed encoding
    writes (built here in-process, without Ray), and ``my_sharded_index``: 2 shards built from them."""
    from flmr.data import SAMPLE_COLLECTION
    from flmr.distributed.embeddings import prepare_folder, write_part
    from flmr.distributed.shard_index import build_sharded_index
    from flmr.encoding import DocumentEncoder, encoder_identity, read_collection
    from flmr.index import stored_fields
    from flmr.model.tokenization_flmr import DEFAULT_DOC_MAXLEN

    world = _doctest_world["root"]
    root = tmp_path_factory.mktemp("doctest-sharded")
    model = _doctest_world["names"]["model"]
    documents = read_collection(SAMPLE_COLLECTION)
    vectors = DocumentEncoder(model, show_progress=False).encode(documents)
    checkpoint = str(world / "my_checkpoint")
    embeddings = root / "my_embeddings"
    # the run's settings as encode_collection records them (DocumentEncoder's default token limit)
    settings = {"num_documents": len(documents), "max_length": DEFAULT_DOC_MAXLEN, "storage_dtype": "float16"}
    prepare_folder(embeddings, {"checkpoint": checkpoint, **settings})
    identity = encoder_identity(model).with_checkpoint(checkpoint)
    worker = f"127.0.0.1:{os.getpid()}"  # what a Ray worker records: its node's address and process id
    for first in range(0, len(documents), PART_DOCS):
        positions = range(first, min(first + PART_DOCS, len(documents)))
        write_part(
            embeddings,
            list(positions),
            [vectors[i] for i in positions],
            [stored_fields(documents[i]) for i in positions],
            identity,
            {"worker": worker, "started": time.time(), "finished": time.time()},
        )
    build_sharded_index(embeddings, root / "my_sharded_index", num_shards=2, use_ray=False)
    return root


@pytest.fixture(scope="session")
def _doctest_m2kr(tmp_path_factory) -> Path:
    """``m2kr_local``: the M2KR parquet layout (see flmr.data.m2kr) of a toy EVQA task."""
    import pyarrow
    import pyarrow.parquet

    from flmr.data import SAMPLE_COLLECTION
    from flmr.encoding import read_collection

    documents = read_collection(SAMPLE_COLLECTION)[:M2KR_PASSAGES]
    queries = [
        {
            "question_id": f"q{i}",
            "question": f"what is {d.id}?",
            "img_path": None,
            "pos_item_ids": [d.id],
            "instruction": "Using the provided image, obtain documents that address the subsequent question",
            "answers": [d.id],
        }
        for i, d in enumerate(documents[:SAMPLE_DOCS])
    ]
    passages = [{"passage_id": d.id, "passage_content": d.text} for d in documents]
    root = tmp_path_factory.mktemp("doctest-m2kr") / "m2kr_local"
    for folder, name, rows in (("EVQA_data", "test", queries), ("EVQA_passages", "test_passages", passages)):
        (root / folder).mkdir(parents=True)
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), root / folder / f"{name}.parquet")
    return root


@pytest.fixture(autouse=True)
def _doctest_folder(request: pytest.FixtureRequest) -> None:
    """Run each docstring example in a fresh folder holding copies of ``my_index`` and ``my_checkpoint``
    (the tests' own fixtures are untouched)."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    from flmr.index import Index

    tmp_path = request.getfixturevalue("tmp_path")
    monkeypatch = request.getfixturevalue("monkeypatch")

    world = request.getfixturevalue("_doctest_world")
    for name in ("my_index", "my_checkpoint"):
        shutil.copytree(world["root"] / name, tmp_path / name)
    source = "".join(example.source for example in request.node.dtest.examples)
    if "m2kr_local" in source:
        shutil.copytree(request.getfixturevalue("_doctest_m2kr"), tmp_path / "m2kr_local")
    for name in SHARDED_FOLDERS:
        if name in source:
            shutil.copytree(request.getfixturevalue("_doctest_sharded") / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(world["names"], index=Index.load(Path("my_index")))
