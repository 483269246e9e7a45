"""The search page's query forms and state, in headless Chromium (see test_search_page.py): image-only
searches, errors that go away, the search in the address, metadata and every image on the cards."""

import urllib.parse

import pytest
from service_helpers import make_image, running_server
from test_search_page import (  # noqa: F401 - page is a fixture
    CHROMIUM,
    HEIGHT,
    WIDTH,
    headless_chromium,
    page,
    search_from_the_form,
)

from flmr.encoding import DEFAULT_INSTRUCTIONS
from flmr.serving import ServiceSettings, create_app
from helpers import build_preflmr_index

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def results(devtools) -> list[dict]:
    return devtools.evaluate(
        """[...document.querySelectorAll('#results .result')].map(item => ({
            id: item.querySelector('.doc-id').textContent,
            metadata: [...item.querySelectorAll('.metadata dt')].map(term => term.textContent),
            images: [...item.querySelectorAll('.thumbnail')].map(image => image.getAttribute('src')),
            summary: item.querySelector('.explanation-summary').textContent,
        }))"""
    )


def error_text(devtools) -> str | None:
    return devtools.evaluate(
        "document.getElementById('error').hidden ? null : document.getElementById('error').textContent"
    )


def test_an_image_alone_searches(page):  # noqa: F811 - the imported fixture
    devtools, folder = page
    image = make_image(folder / "image-only.png", (30, 60, 220), size=(80, 80))
    search_from_the_form(devtools, "", image, 5)
    devtools.wait_for("document.querySelectorAll('#results .result').length === 5")
    assert "(image only)" in devtools.evaluate("document.getElementById('status').textContent")
    assert error_text(devtools) is None
    devtools.evaluate("document.getElementById('clear-image').click()")


def test_an_error_goes_away_once_the_search_is_fixed(page):  # noqa: F811
    devtools, _ = page
    search_from_the_form(devtools, "", None, 5)  # neither a question nor an image
    assert (
        devtools.wait_for("document.getElementById('error').textContent")
        == "Type a question or attach an image."
    )
    devtools.evaluate("document.getElementById('query').focus()")
    devtools.call("Input.insertText", text="a text editor")  # typing clears it
    assert error_text(devtools) is None
    search_from_the_form(devtools, "web server " * 30, None, 5)  # refused by the service: 422
    assert devtools.wait_for("document.getElementById('error').textContent").startswith("422")
    search_from_the_form(devtools, "a text editor", None, 5)
    devtools.wait_for("document.querySelectorAll('#results .result').length === 5")
    assert error_text(devtools) is None


def test_the_search_is_kept_in_the_address_and_a_link_restores_it(page):  # noqa: F811
    devtools, _ = page
    devtools.evaluate('document.getElementById(\'filter\').value = \'{"$id": {"$in": ["vim", "nano"]}}\'')
    devtools.evaluate("document.getElementById('hybrid-weight').value = '0.5'")
    search_from_the_form(devtools, "a text editor", None, 4)
    devtools.wait_for("document.querySelectorAll('#results .result').length === 2")
    address = urllib.parse.parse_qs(urllib.parse.urlparse(devtools.evaluate("window.location.href")).query)
    assert address == {
        "query": ["a text editor"],
        "k": ["4"],
        "filter": ['{"$id": {"$in": ["vim", "nano"]}}'],
        "hybrid_weight": ["0.5"],
    }
    link = devtools.evaluate("window.location.href")
    devtools.evaluate(
        "document.getElementById('filter').value = ''; document.getElementById('hybrid-weight').value = ''"
    )
    devtools.call("Page.navigate", url=link)
    devtools.wait_for(
        "document.readyState === 'complete' && document.querySelectorAll('#results .result').length === 2"
    )
    assert devtools.evaluate("document.getElementById('k').value") == "4"
    assert devtools.evaluate("document.getElementById('hybrid-weight').value") == "0.5"
    assert sorted(r["id"] for r in results(devtools)) == ["nano", "vim"]
    devtools.evaluate(
        "document.getElementById('filter').value = ''; document.getElementById('hybrid-weight').value = ''"
    )


def test_cards_show_metadata_and_the_header_the_checkpoint_name(page):  # noqa: F811
    devtools, _ = page
    search_from_the_form(devtools, "a text editor", None, 3)
    devtools.wait_for("document.querySelectorAll('#results .result .metadata dt').length > 0")
    assert all(r["metadata"] == ["summary", "source"] for r in results(devtools))
    header = devtools.evaluate("document.getElementById('index-info').textContent")
    assert "model flmr_tiny" in header and "/" not in header
    assert all("special tokens" not in r["summary"] for r in results(devtools))  # no jargon


@pytest.fixture(scope="module")
def preflmr_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("preflmr-page")
    retriever, index, images = build_preflmr_index(folder)
    app = create_app(retriever, index, ServiceSettings(image_root=images, max_k=3, default_k=3))
    profile = folder / "chromium-profile"
    profile.mkdir()
    with running_server(app) as base_url, headless_chromium(profile) as devtools:
        devtools.call(
            "Emulation.setDeviceMetricsOverride", width=420, height=HEIGHT, deviceScaleFactor=1, mobile=True
        )
        devtools.call("Page.navigate", url=f"{base_url}/")
        devtools.wait_for("document.getElementById('index-info')?.textContent.includes('3 documents')")
        yield devtools, folder


def test_preflmr_cards_show_every_image_and_the_instruction_box(preflmr_page):
    devtools, folder = preflmr_page
    assert devtools.evaluate("document.querySelector('label.instruction').hidden") is False
    image = make_image(folder / "query.png", (200, 30, 30), size=(60, 60))
    search_from_the_form(devtools, "", image, 3)
    devtools.wait_for("document.querySelectorAll('#results .result').length === 3")
    card = next(r for r in results(devtools) if r["id"] == "two-pictures")
    assert card["images"] == [f"/api/documents/2/images/{n}" for n in (1, 2)]
    assert card["summary"].startswith("image 1 ")  # what the red front image adds, named as the API does
    assert devtools.evaluate("document.documentElement.scrollWidth") <= 420  # nothing overflows at 420 px
    devtools.evaluate(f"document.getElementById('instruction').value = {DEFAULT_INSTRUCTIONS['image']!r}")
    search_from_the_form(devtools, "", image, 3)
    devtools.wait_for("window.location.search.includes('instruction=')")
