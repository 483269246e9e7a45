"""`flmr search --filter / --hybrid-weight` on the sample collection indexed with the tiny FLMR."""

import json

import pytest

from flmr.cli.main import main


def search_json(capsys, *argv: str) -> dict:
    code = main(["search", *argv, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_filter_keeps_only_matching_documents(sample_index, capsys) -> None:
    spec = {"$id": {"$in": ["vim", "nano", "joe", "no-such-package"]}}
    record = search_json(capsys, str(sample_index), "a text editor", "-k", "5", "--filter", json.dumps(spec))
    assert record["filter"] == spec
    assert sorted(hit["id"] for hit in record["results"]) == ["joe", "nano", "vim"]


def test_hybrid_weight_one_ranks_by_bm25(sample_index, capsys) -> None:
    # only joe's description says "WordStar"; the tiny checkpoint's random weights cannot know that
    record = search_json(capsys, str(sample_index), "WordStar", "-k", "3", "--hybrid-weight", "1")
    assert record["hybrid_weight"] == 1.0
    first = record["results"][0]
    assert first["id"] == "joe" and first["bm25_score"] > 0 and first["score"] == 1.0
    assert all(hit["bm25_score"] == 0 for hit in record["results"][1:])


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--filter", '{"year": {"$after": 2000}}', "filter field 'year': unknown operator '$after'"),
        ("--filter", "{lang: en}", "the filter is not valid JSON"),
        ("--hybrid-weight", "1.5", "must be from 0 to 1, got 1.5"),
    ],
)
def test_bad_options_are_usage_errors(sample_index, capsys, option, value, message) -> None:
    assert main(["search", str(sample_index), "a text editor", option, value]) == 2
    assert message in capsys.readouterr().err
