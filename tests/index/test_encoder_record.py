"""Indexes store the encoder identity as they always did, and read older records as typed identities."""

import json

from flmr.encoding import EncoderIdentity
from flmr.index import Index

LEGACY_RECORD = {
    "checkpoint": "/models/flmr_tiny",
    "dim": 16,
    "digest": "0123456789abcdef0123456789abcdef",
    "weight_signature": [0.25, 0.0125, 1.5],
}


def stored_record(path) -> dict:
    return json.loads((path / "manifest.json").read_text())["encoder"]


def test_an_identity_is_stored_as_its_json_object(tmp_path, writer, documents) -> None:
    identity = EncoderIdentity.from_json(LEGACY_RECORD)
    index = writer.write(tmp_path / "typed", documents, encoder=identity)
    assert stored_record(tmp_path / "typed") == LEGACY_RECORD
    assert isinstance(index.encoder, EncoderIdentity) and index.encoder == identity


def test_a_plain_record_as_older_flmr_wrote_it_loads_typed(tmp_path, writer, documents) -> None:
    writer.write(
        tmp_path / "legacy", documents, encoder=dict(LEGACY_RECORD)
    )  # as the old Retriever passed it
    assert stored_record(tmp_path / "legacy") == LEGACY_RECORD
    loaded = Index.load(tmp_path / "legacy").encoder
    assert loaded.checkpoint == "/models/flmr_tiny" and loaded.digest == LEGACY_RECORD["digest"]
    assert loaded.weight_signature == (0.25, 0.0125, 1.5)
    assert loaded["checkpoint"] == "/models/flmr_tiny"  # `index.encoder[...]` keeps working


def test_an_index_without_a_record_has_an_empty_identity(tmp_path, writer, documents) -> None:
    index = writer.write(tmp_path / "bare", documents)
    assert stored_record(tmp_path / "bare") == {}
    assert index.encoder == EncoderIdentity() and index.encoder.checkpoint is None
