"""Names changed to the field's terms keep working under their earlier names, with a DeprecationWarning
and the same result: ``max_length`` -> ``doc_maxlen`` (and ``--max-length`` -> ``--doc-maxlen``),
``batch_max_size`` -> ``max_batch_size``."""

import pytest
import torch

import flmr
from flmr.cli.main import build_parser
from flmr.encoding import DocumentEncoder, read_collection
from flmr.retrieval import Retriever
from flmr.serving.settings import ServiceSettings
from helpers import FLMR_TINY, tiny_config

TEXTS = [" ".join(f"word{i} alpha beta" for i in range(40)), "a short one"]
INDEX_ARGS = ["index", "--checkpoint", "c", "--collection", "sample", "--output", "o"]


def test_document_encoder_max_length(make_model) -> None:
    model = make_model(tiny_config())
    documents = read_collection(TEXTS)
    with pytest.warns(DeprecationWarning, match="'max_length' is deprecated.*'doc_maxlen'"):
        old = DocumentEncoder(model, max_length=12, show_progress=False)
    new = DocumentEncoder(model, doc_maxlen=12, show_progress=False)
    assert old.doc_maxlen == new.doc_maxlen == 12
    for a, b in zip(old.encode(documents), new.encode(documents), strict=True):
        assert a.shape[0] <= 12 and torch.equal(a, b)
    with pytest.warns(DeprecationWarning, match="doc_maxlen"):
        assert old.max_length == 12


def test_giving_both_names_is_an_error(make_model) -> None:
    with pytest.raises(TypeError, match="both 'max_length' and its new name 'doc_maxlen'"):
        DocumentEncoder(make_model(tiny_config()), max_length=12, doc_maxlen=16)


def test_retriever_index_max_length(tmp_path) -> None:
    retriever = Retriever(flmr.FLMRModelForRetrieval.from_pretrained(FLMR_TINY).eval())
    with pytest.warns(DeprecationWarning, match="doc_maxlen"):
        old = retriever.index(TEXTS, tmp_path / "old", max_length=12, show_progress=False)
    new = retriever.index(TEXTS, tmp_path / "new", doc_maxlen=12, show_progress=False)
    assert old.encoding == new.encoding == {"max_length": 12, "storage_dtype": "float16"}
    assert torch.equal(old.doclens, new.doclens) and int(old.doclens[0]) <= 12


def test_ray_encode_collection_takes_the_same_alias() -> None:
    from flmr.distributed.ray_encoding import encode_collection

    with pytest.raises(TypeError, match="both 'max_length' and its new name 'doc_maxlen'"):
        encode_collection(TEXTS, "unused", "unused", max_length=12, doc_maxlen=12)


def test_service_settings_batch_max_size() -> None:
    with pytest.warns(DeprecationWarning, match="'batch_max_size' is deprecated.*'max_batch_size'"):
        old = ServiceSettings(batch_max_size=8)
    assert old == ServiceSettings(max_batch_size=8) and old.max_batch_size == 8
    with pytest.warns(DeprecationWarning, match="max_batch_size"):
        assert old.batch_max_size == 8
    with pytest.raises(ValueError, match="max_batch_size must be positive"):
        ServiceSettings(max_batch_size=0)


def test_index_flag_max_length(capsys) -> None:
    parser = build_parser()
    with pytest.warns(DeprecationWarning, match="'--max-length' is deprecated.*'--doc-maxlen'"):
        old = parser.parse_args([*INDEX_ARGS, "--max-length", "64"])
    assert "--max-length is deprecated, use --doc-maxlen" in capsys.readouterr().err
    assert old == parser.parse_args([*INDEX_ARGS, "--doc-maxlen", "64"])
    assert parser.parse_args(INDEX_ARGS).doc_maxlen == 512
    with pytest.raises(SystemExit):
        parser.parse_args([*INDEX_ARGS, "--max-length", "0"])  # checked as --doc-maxlen is
