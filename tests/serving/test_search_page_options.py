"""The search page's metadata filter and BM25 share boxes, in headless Chromium (see test_search_page.py)."""

import pytest
from test_search_page import CHROMIUM, page, search_from_the_form  # noqa: F401 - page is a fixture

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def set_options(devtools, filter_text: str, hybrid_weight: str) -> None:
    devtools.evaluate(f"document.getElementById('filter').value = {filter_text!r}")
    devtools.evaluate(f"document.getElementById('hybrid-weight').value = {hybrid_weight!r}")


def result_ids(devtools, count: int) -> list[str]:
    devtools.wait_for(f"document.querySelectorAll('#results .result').length === {count}")
    return devtools.evaluate(
        "[...document.querySelectorAll('#results .doc-id')].map(item => item.textContent)"
    )


def test_the_filter_box_restricts_the_results(page) -> None:  # noqa: F811 - the imported fixture
    devtools, _ = page
    set_options(devtools, '{"$id": {"$in": ["red-square", "blue-square"]}}', "")
    search_from_the_form(devtools, "a picture", None, 5)
    assert sorted(result_ids(devtools, 2)) == ["blue-square", "red-square"]


def test_the_bm25_share_ranks_an_exact_term_first(page) -> None:  # noqa: F811
    devtools, _ = page
    set_options(devtools, "", "1")
    search_from_the_form(devtools, "swapped", None, 3)
    assert result_ids(devtools, 3)[0] == "swapped"


def test_an_invalid_filter_shows_the_services_error(page) -> None:  # noqa: F811
    devtools, _ = page
    set_options(devtools, '{"year": {"$after": 2000}}', "")
    search_from_the_form(devtools, "a picture", None, 5)
    message = devtools.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert message.startswith("422") and "filter field 'year': unknown operator '$after'" in message
    set_options(devtools, "", "")
