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
        ("--ndocs", "0", "argument --ndocs: must be at least 1, got 0"),
        ("--ncells", "two", "argument --ncells: 'two' is not a whole number"),
        ("--candidate-query-vectors", "some", "argument --candidate-query-vectors: invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(sample_index, capsys, option, value, message) -> None:
    assert main(["search", str(sample_index), "a text editor", option, value]) == 2
    assert message in capsys.readouterr().err


def test_plaid_flags_reach_the_search(sample_index, capsys, monkeypatch) -> None:
    from flmr.search.plaid import PlaidSearcher

    seen = []
    original = PlaidSearcher.__init__

    def recording(self, index, settings=None, **options):
        original(self, index, settings, **options)
        seen.append(self.settings.plaid)

    monkeypatch.setattr(PlaidSearcher, "__init__", recording)
    argv = [
        "--ncells",
        "3",
        "--ndocs",
        "40",
        "--centroid-score-threshold",
        "0.2",
        "--candidate-query-vectors",
    ]
    search_json(capsys, str(sample_index), "a text editor", "-k", "2", *argv, "text_first_32")
    assert (seen[-1].ncells, seen[-1].ndocs, seen[-1].centroid_score_threshold) == (3, 40, 0.2)
    assert seen[-1].candidate_query_vectors == "text_first_32"
