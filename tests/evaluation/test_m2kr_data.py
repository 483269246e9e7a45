"""The local M2KR layouts (save_to_disk, a saved split, parquet as on the hub) and their errors."""

import datasets
import pytest

from evaluation.m2kr_toy import build_toy_m2kr, toy_rows
from flmr.evaluation import M2KRDataError, load_m2kr_split


def test_save_to_disk_layout(tmp_path):
    root = build_toy_m2kr(tmp_path, "OKVQA", num_queries=5, num_passages=9)
    data = load_m2kr_split(root, "OKVQA", "valid")
    assert (data.task, data.split, len(data.queries), len(data.passages)) == ("OKVQA", "valid", 5, 9)
    assert data.passages[0]["passage_id"].startswith("p1_")  # valid_passages, not another split's


def test_split_saved_alone(tmp_path):
    queries, passages = toy_rows(4, 6, seed=0, images=False)
    datasets.Dataset.from_list(queries).save_to_disk(str(tmp_path / "KVQA_data" / "test"))
    datasets.Dataset.from_list(passages).save_to_disk(str(tmp_path / "KVQA_passages" / "test_passages"))
    data = load_m2kr_split(tmp_path, "KVQA", "test")
    assert len(data.queries) == 4 and len(data.passages) == 6


def test_parquet_files_as_in_the_hub_repository(tmp_path):
    queries, passages = toy_rows(7, 8, seed=0, images=False)
    (tmp_path / "EVQA_data").mkdir()
    (tmp_path / "EVQA_passages").mkdir()
    datasets.Dataset.from_list(queries[:4]).to_parquet(
        str(tmp_path / "EVQA_data" / "test-00000-of-00002.parquet")
    )
    datasets.Dataset.from_list(queries[4:]).to_parquet(
        str(tmp_path / "EVQA_data" / "test-00001-of-00002.parquet")
    )
    datasets.Dataset.from_list(passages).to_parquet(
        str(tmp_path / "EVQA_passages" / "test_passages-00000-of-00001.parquet")
    )
    data = load_m2kr_split(tmp_path, "EVQA", "test")
    assert data.queries["question_id"][:] == [q["question_id"] for q in queries]
    assert len(data.passages) == 8


def test_missing_split_is_named(tmp_path):
    root = build_toy_m2kr(tmp_path, num_queries=2, num_passages=4)
    with pytest.raises(M2KRDataError, match="no split 'dev'"):
        load_m2kr_split(root, "EVQA", "dev")


def test_missing_columns_are_named(tmp_path):
    datasets.DatasetDict(
        {"test": datasets.Dataset.from_list([{"question_id": "q", "question": "?"}])}
    ).save_to_disk(str(tmp_path / "X_data"))
    datasets.DatasetDict(
        {"test_passages": datasets.Dataset.from_list([{"passage_id": "p", "passage_content": "t"}])}
    ).save_to_disk(str(tmp_path / "X_passages"))
    with pytest.raises(M2KRDataError, match="img_path"):
        load_m2kr_split(tmp_path, "X", "test")


def test_unknown_source_without_hub_access(tmp_path):
    with pytest.raises(M2KRDataError, match="no local folder"):
        load_m2kr_split(tmp_path / "absent", "EVQA", "test")
