"""The search page in headless Chromium: type a question, attach an image, see ranked results.

Chromium is driven over the DevTools protocol (a websocket; ``websocket-client``). Needs Debian's
``chromium`` package (``apt-get install -y chromium``); skipped with that reason when it is missing.
"""

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_helpers import IMAGE_DOCUMENTS, build_index, load_retriever, make_image, running_server

from flmr.serving import ServiceSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
websocket = pytest.importorskip("websocket", reason="the page test drives Chromium with websocket-client")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get update && apt-get install -y chromium)",
)
WIDTH, HEIGHT = 1280, 1000
NUM_DOCUMENTS = 15
MAX_QUERY_CHARS = 200


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, websocket_url: str) -> None:
        self.socket = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self.last_id = 0

    def call(self, method: str, **params):
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:  # events arrive interleaved with answers; only our answer matters
            message = json.loads(self.socket.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page never satisfied: {expression}")
            time.sleep(0.1)
        return value


@contextlib.contextmanager
def headless_chromium(profile: Path) -> Iterator[DevTools]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        f"--window-size={WIDTH},{HEIGHT}",
        "about:blank",
    ]
    with open(profile.parent / "chromium.log", "wb") as log:
        browser = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if browser.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start: {(profile.parent / 'chromium.log').read_text()[-2000:]}"
                )
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            page = next(target for target in json.load(answer) if target["type"] == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        try:
            yield devtools
        finally:
            devtools.socket.close()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    retriever = load_retriever()
    index, images = build_index(folder, retriever, break_images=False)
    app = create_app(
        retriever,
        index,
        ServiceSettings(image_root=images, max_k=NUM_DOCUMENTS, max_query_chars=MAX_QUERY_CHARS),
    )
    profile = folder / "chromium-profile"
    profile.mkdir()
    with running_server(app) as base_url, headless_chromium(profile) as devtools:
        devtools.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        devtools.call("Page.enable")
        devtools.call("Page.navigate", url=f"{base_url}/")
        devtools.wait_for("document.getElementById('index-info')?.textContent.includes('15 documents')")
        yield devtools, folder


def search_from_the_form(devtools: DevTools, question: str, image: Path | None, k: int) -> None:
    devtools.evaluate("document.getElementById('query').value = ''; document.getElementById('query').focus()")
    devtools.call("Input.insertText", text=question)  # typed, as a person would
    if image is not None:
        document = devtools.call("DOM.getDocument")
        file_input = devtools.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#image")
        devtools.call("DOM.setFileInputFiles", files=[str(image)], nodeId=file_input["nodeId"])
        devtools.wait_for("!document.getElementById('image-preview').hidden")
    devtools.evaluate(f"document.getElementById('k').value = '{k}'")
    devtools.evaluate("document.getElementById('results').replaceChildren()")
    devtools.evaluate("document.getElementById('search-button').click()")


def test_a_question_with_an_image_shows_ranked_results_with_images(page, tmp_path):
    devtools, folder = page
    query_image = make_image(folder / "query.png", (200, 40, 40), size=(80, 80))
    search_from_the_form(devtools, "a picture of a red square", query_image, NUM_DOCUMENTS)
    devtools.wait_for(f"document.querySelectorAll('#results .result').length === {NUM_DOCUMENTS}")
    devtools.wait_for(
        "[...document.querySelectorAll('#results .thumbnail:not([hidden])')]"
        ".every(image => image.complete && image.naturalWidth > 0)"
    )
    results = devtools.evaluate(
        """[...document.querySelectorAll('#results .result')].map(item => ({
            rank: item.querySelector('.rank').textContent,
            id: item.querySelector('.doc-id').textContent,
            score: parseFloat(item.querySelector('.score').textContent.replace('score ', '')),
            image: item.querySelector('.thumbnail:not([hidden])')?.naturalWidth ?? 0,
        }))"""
    )
    assert [r["rank"] for r in results] == [str(n) for n in range(1, NUM_DOCUMENTS + 1)]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {r["id"] for r in results if r["image"] == 64} == set(IMAGE_DOCUMENTS)
    assert "(text + image)" in devtools.evaluate("document.getElementById('status').textContent")
    assert devtools.evaluate("document.getElementById('error').hidden") is True

    screenshot = tmp_path / "search_page.png"
    screenshot.write_bytes(base64.b64decode(devtools.call("Page.captureScreenshot", format="png")["data"]))
    if os.environ.get("FLMR_SCREENSHOT_DIR"):  # to look at it after a run
        shutil.copy(screenshot, Path(os.environ["FLMR_SCREENSHOT_DIR"]) / screenshot.name)
    image = Image.open(io.BytesIO(screenshot.read_bytes())).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    assert image.size == (WIDTH, HEIGHT)
    assert pixels.std(axis=0).mean() > 20, "the screenshot is blank"
    assert len(np.unique(pixels, axis=0)) > 200, "the screenshot has too few colours to show text and images"


def test_a_refused_question_shows_the_services_error(page):
    devtools, _ = page
    search_from_the_form(devtools, "web server " * 30, None, 5)
    message = devtools.wait_for(
        "!document.getElementById('error').hidden && document.getElementById('error').textContent"
    )
    assert message.startswith("422") and f"at most {MAX_QUERY_CHARS} are accepted" in message
    assert devtools.evaluate("document.querySelectorAll('#results .result').length") == 0


def test_a_linked_question_runs_on_load(page):
    devtools, _ = page
    base_url = devtools.evaluate("window.location.origin")
    devtools.call("Page.navigate", url=f"{base_url}/?q=which%20web%20server")
    devtools.wait_for(
        "document.querySelectorAll('#results .result').length > 0 && document.readyState === 'complete'"
    )
    assert devtools.evaluate("document.getElementById('query').value") == "which web server"


def test_results_highlight_the_tokens_that_add_to_the_score(page):
    devtools, _ = page
    question = "which text editor runs in a terminal"
    search_from_the_form(devtools, question, None, 5)
    devtools.wait_for("document.querySelectorAll('#results .result mark.match').length > 0")
    results = devtools.evaluate(
        """[...document.querySelectorAll('#results .result')].map(item => ({
            text: item.querySelector('.text').textContent,
            score: parseFloat(item.querySelector('.score').textContent.replace('score ', '')),
            summary: item.querySelector('.explanation-summary').textContent,
            marks: [...item.querySelectorAll('.text mark.match')].map(mark => ({
                contribution: parseFloat(mark.dataset.contribution),
                query: mark.dataset.query,
                title: mark.title,
                background: getComputedStyle(mark).backgroundColor,
            })),
        }))"""
    )
    api = json.load(
        urllib.request.urlopen(f"{devtools.evaluate('window.location.origin')}/api/search?q=x&k=1")
    )
    assert (
        api["results"][0]["explanation"] is None
    )  # the page asks for explanations, the API default does not
    assert len(results) == 5
    alphas, marks = [], []
    for result in results:
        assert result["marks"], "every result has highlighted tokens"
        # highlighted tokens plus the summary (images, special tokens; 2 decimals each) give the score
        summary = sum(float(part.rsplit(" ", 1)[1]) for part in result["summary"].split(" · ") if part)
        assert abs(sum(m["contribution"] for m in result["marks"]) + summary - result["score"]) < 0.02
        for mark in result["marks"]:
            assert mark["contribution"] > 0 and mark["title"].startswith(
                f"matched by {mark['query']} · adds "
            )
            red, green, blue, alpha = (float(v) for v in mark["background"][5:-1].split(","))
            assert (red, green, blue) == (36, 87, 197) and 0.1 <= alpha <= 0.9 + 1e-6
            alphas.append(alpha)
            marks.append(mark)
    # shaded by contribution: alpha = 0.1 + 0.8 * contribution / (the page's largest contribution, which
    # may be a special token's or an image's, shown in the summary only); colours keep alpha in 1/255 steps
    top_alpha, top = max(zip(alphas, marks, strict=True), key=lambda pair: pair[1]["contribution"])
    scale = (top_alpha - 0.1) / top["contribution"]
    for alpha, mark in zip(alphas, marks, strict=True):
        assert alpha == pytest.approx(0.1 + scale * mark["contribution"], abs=5e-3)
    assert 0 < scale <= 0.8 / top["contribution"] + 1e-2 and min(alphas) < max(alphas)

    devtools.evaluate("document.getElementById('explain').click()")  # off: plain text, no highlights
    search_from_the_form(devtools, question, None, 5)
    devtools.wait_for("document.querySelectorAll('#results .result').length === 5")
    assert devtools.evaluate("document.querySelectorAll('#results mark').length") == 0
    assert [r["text"] for r in results] == devtools.evaluate(
        "[...document.querySelectorAll('#results .text')].map(text => text.textContent)"
    )
    devtools.evaluate("document.getElementById('explain').click()")
