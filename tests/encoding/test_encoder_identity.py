"""The encoder identity: one typed record, stored as the JSON object indexes have always held."""

import json

import pytest

from flmr.encoding import EncoderIdentity, encoder_identity, model_fingerprint, same_encoder
from helpers import tiny_config

# What `model_fingerprint` returned (and indexes stored) before the record was typed.
LEGACY_RECORD = {
    "checkpoint": "/models/flmr_tiny",
    "dim": 16,
    "digest": "0123456789abcdef0123456789abcdef",
    "weight_signature": [0.25, 0.0125, 1.5],
}


def test_json_round_trip_keeps_every_key_and_value() -> None:
    record = {**LEGACY_RECORD, "sha": "abc"}
    identity = EncoderIdentity.from_json(json.loads(json.dumps(record)))
    assert identity.checkpoint == "/models/flmr_tiny" and identity.dim == 16
    assert identity.weight_signature == (0.25, 0.0125, 1.5) and identity.extra == {"sha": "abc"}
    assert identity.to_json() == record
    assert json.dumps(identity.to_json()) == json.dumps(record)  # same keys in the same order
    assert EncoderIdentity.from_json(identity.to_json()) == identity


def test_unrecorded_identity_is_empty_and_matches_any_encoder() -> None:
    for record in (None, {}):
        identity = EncoderIdentity.from_json(record)
        assert identity.to_json() == {} and identity.checkpoint is None
        assert identity.compatible_with(LEGACY_RECORD)
    assert not EncoderIdentity.from_json(LEGACY_RECORD).compatible_with({"digest": "other"})


def test_reads_as_the_mapping_it_is_stored_as() -> None:
    identity = EncoderIdentity.from_json(LEGACY_RECORD)
    assert identity["checkpoint"] == "/models/flmr_tiny" and identity.get("nope") is None
    assert dict(identity) == LEGACY_RECORD and identity == LEGACY_RECORD
    with pytest.raises(TypeError):
        identity["checkpoint"] = "elsewhere"  # frozen: use with_checkpoint


def test_same_as_tolerates_precision_not_training() -> None:
    identity = EncoderIdentity.from_json(LEGACY_RECORD)
    bfloat16 = {**LEGACY_RECORD, "weight_signature": [0.2501, 0.01251, 1.5005]}  # within 0.1 %
    trained = {**LEGACY_RECORD, "weight_signature": [0.25, 0.0125, 1.6]}
    assert identity.same_as(bfloat16) and same_encoder(LEGACY_RECORD, bfloat16)
    assert not identity.same_as(trained) and not same_encoder(LEGACY_RECORD, trained)
    assert not identity.same_as({**LEGACY_RECORD, "digest": "f" * 32})
    assert not identity.same_as({**LEGACY_RECORD, "weight_signature": [0.25, 0.0125]})
    assert identity.with_checkpoint("/elsewhere").same_as(identity)


def test_from_json_rejects_a_record_that_is_not_an_object() -> None:
    with pytest.raises(TypeError, match="must be a JSON object"):
        EncoderIdentity.from_json(["checkpoint"])


def test_a_model_identity_has_the_recorded_keys(make_model) -> None:
    model = make_model(tiny_config())
    identity = encoder_identity(model)
    assert set(identity.to_json()) == {"checkpoint", "dim", "digest", "weight_signature"}
    assert identity.dim == model.config.dim and len(identity.digest) == 32
    assert len(identity.weight_signature) >= len(model.state_dict()) > 0
    assert model_fingerprint(model) == identity  # the earlier name
