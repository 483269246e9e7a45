"""Unique ids (add refuses, upsert replaces), checksums, verification and damaged-file errors."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from flmr.cli.main import main
from flmr.index import DuplicateIdError, Index, IndexFormatError, IndexWriter, verify_index
from flmr.index.storage import manifest_checksum
from flmr.search import ExactSearcher, PlaidSearcher
from flmr.search.filters import compile_filter


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A small index with two segments, a delete and stored vectors: every kind of file."""
    from engine_fixtures import clustered_documents

    path = tmp_path_factory.mktemp("pristine") / "index"
    index = IndexWriter(nbits=2, num_partitions=16, kmeans_iterations=4).write(
        path,
        clustered_documents(40, seed=2),
        documents=[{"id": f"doc-{i}", "text": f"t{i}"} for i in range(40)],
    )
    index.add(clustered_documents(5, seed=4), documents=[{"id": f"new-{i}"} for i in range(5)])
    index.delete([3])
    return path


@pytest.fixture
def index(pristine, tmp_path) -> Index:
    shutil.copytree(pristine, tmp_path / "index")
    return Index.load(tmp_path / "index")


def live_ids_by_filter(index: Index, document_id: str) -> list[int]:
    return compile_filter({"$id": document_id}).mask(index).nonzero().flatten().tolist()


def test_add_refuses_an_existing_id_and_repeated_ids(index, make_documents) -> None:
    with pytest.raises(DuplicateIdError, match="'doc-7' is already in the index .*pid 7.*upsert"):
        index.add(make_documents(2, seed=5), documents=[{"id": "fresh"}, {"id": "doc-7"}])
    with pytest.raises(DuplicateIdError, match="'twice' appears twice"):
        index.add(make_documents(2, seed=5), documents=[{"id": "twice"}, {"id": "twice"}])
    reloaded = Index.load(index.path)
    assert reloaded.num_documents == 45 and reloaded.pid_of("fresh") is None
    assert list(index.add(make_documents(1, seed=6), documents=[{"id": "doc-3"}])) == [
        45
    ]  # doc-3 was deleted
    assert index.pid_of("doc-3") == 45 and live_ids_by_filter(index, "doc-3") == [45]


def test_upsert_replaces_by_id_in_one_commit(index, make_documents) -> None:
    generation = index.generation
    new = index.upsert(make_documents(2, seed=7), documents=[{"id": "doc-7", "text": "v2"}, {"id": "other"}])
    assert list(new) == [45, 46] and index.generation == generation + 1
    reloaded = Index.load(index.path)
    assert bool(reloaded.deleted[7]) and reloaded.pid_of("doc-7") == 45
    assert reloaded.document(45).text == "v2"
    for document_id in ("doc-7", "other", "doc-8", "doc-3", "new-2"):  # lookup and $id agree
        pid = reloaded.pid_of(document_id)
        assert live_ids_by_filter(reloaded, document_id) == ([] if pid is None else [pid])


def test_a_fresh_index_verifies_and_records_checksums(index) -> None:
    report = verify_index(index.path)
    assert report.ok and report.unchecked == [] and report.files_checked == len(index.manifest["checksums"])
    assert index.verify().ok


def damage_cases(pristine: Path) -> list[tuple[str, str]]:
    manifest = json.loads((pristine / "manifest.json").read_text())
    files = ["manifest.json", *manifest["files"].values(), *manifest["checksums"]]
    return [(name, how) for name in dict.fromkeys(files) for how in ("truncate", "garble")]


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        middle = len(data) // 2
        data[middle : middle + 16] = bytes(b ^ 0xA5 for b in data[middle : middle + 16])
        path.write_bytes(bytes(data))


def use_everything(index: Index) -> None:
    """Search and read every document, as a service would."""
    queries = torch.nn.functional.normalize(
        torch.randn(3, 8, index.dim, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    PlaidSearcher(index).search(queries, k=5, return_documents=True)
    ExactSearcher(index).search(queries, k=5)
    for pid in range(index.num_documents):
        index.document(pid)


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_every_damaged_file_is_named(pristine, tmp_path, how) -> None:
    for name, _ in [case for case in damage_cases(pristine) if case[1] == how]:
        copy = tmp_path / name.replace("/", "_") / "index"
        shutil.copytree(pristine, copy)
        damage(copy / name, how)
        report = verify_index(copy)
        assert not report.ok and any(Path(name).name in problem for problem in report.problems), (
            name,
            report,
        )
        try:
            use_everything(Index.load(copy))
        except IndexFormatError as error:
            assert Path(name).name in str(error) or "codec files" in str(error), (name, str(error))
            assert "flmr info --verify" in str(error) or "not a path" in str(error) or "codec" in str(error)
        else:
            assert how == "garble", f"a truncated {name} was not noticed when loading"


def test_manifest_paths_must_stay_inside_the_index(index, tmp_path) -> None:
    manifest = json.loads((index.path / "manifest.json").read_text())
    shutil.copy(index.path / manifest["files"]["deleted"], tmp_path / "outside.npy")
    manifest["files"]["deleted"] = "../outside.npy"
    manifest["manifest_checksum"] = manifest_checksum(manifest)
    (index.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        IndexFormatError, match=r"'\.\./outside\.npy', which is not a path inside the index folder"
    ):
        Index.load(index.path)


def test_cli_reports_a_damaged_index_without_a_traceback(index, capsys) -> None:
    assert main(["info", str(index.path), "--verify"]) == 0
    assert "0 problems" in capsys.readouterr().out
    codes = index.path / index.manifest["segments"][1]["folder"] / "codes.npy"
    damage(codes, "garble")
    assert main(["info", str(index.path), "--verify"]) == 1
    assert f"damaged: {codes}" in capsys.readouterr().out
    damage(codes, "truncate")
    assert main(["info", str(index.path)]) == 1
    error = capsys.readouterr().err
    assert f"index file {codes} is damaged" in error and "Traceback" not in error
