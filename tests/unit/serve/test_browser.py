"""The web page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

``.ci/run`` installs both and sets ``UNIFASHION_REQUIRE_BROWSER=1``, so in CI a missing browser
fails this test instead of skipping it; on a developer machine without them it is skipped
with the reason."""

import json
import os
import shutil
import socket
import threading
import time
import urllib.request

import pytest

from unifashion.catalog.build import read_products
from unifashion.serve.app import create_app, load_service

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("UNIFASHION_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _run_server(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.time() + 30
    while not srv.started and time.time() < end:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(shop):
    model, catalog = load_service(shop.model, shop.catalog)
    yield from _run_server(create_app(model, catalog, steps=2))


@pytest.fixture(scope="module")
def keyed_server(shop, tmp_path_factory):
    from unifashion.serve.auth import KeyStore

    keys = KeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    key = keys.add("page")
    model, catalog = load_service(shop.model, shop.catalog)
    for url in _run_server(create_app(model, catalog, keys=keys)):
        yield url, key


def _api(server, path, body=None, form=None, key=None):
    """The API's answer to the request the page makes (JSON body, or multipart form fields)."""
    headers = {"X-API-Key": key} if key else {}
    if form is not None:
        import httpx

        return httpx.post(server + path, data=form, headers=headers, timeout=60).json()
    request = urllib.request.Request(
        server + path, data=json.dumps(body).encode(), headers={"content-type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def _wait(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_search_upload_and_generate_in_the_page(browser, server, shop):
    from selenium.webdriver.common.by import By

    products = read_products(shop.data)
    target = products[7]
    browser.get(server + "/")
    _wait(browser, lambda d: "products" in d.find_element(By.ID, "status").text)
    options = browser.find_elements(By.CSS_SELECTOR, "#category option")
    assert options[0].text == "all" and len(options) > 1

    # Type a query, see results: the page shows the API's ranking for that text, card for card
    # (the ranking itself is tested in test_app.py).
    box = browser.find_element(By.ID, "query")
    box.send_keys(target.captions[0])
    browser.find_element(By.ID, "search-button").click()
    _wait(browser, lambda d: "text search" in d.find_element(By.ID, "summary").text)
    cards = browser.find_elements(By.CSS_SELECTOR, ".result")
    request = urllib.request.Request(
        server + "/api/search/text",
        data=json.dumps({"text": target.captions[0], "k": 12}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        want = [x["id"] for x in json.loads(r.read())["results"]]
    assert [c.get_attribute("data-id") for c in cards] == want and len(want) == 12
    assert browser.execute_script("return document.querySelector('.result img').naturalWidth") > 0

    # Upload a reference image and a modification text, see results.
    browser.find_element(By.ID, "reference").send_keys(os.path.abspath(products[3].images[0].path))
    browser.find_element(By.ID, "modification").send_keys("is red with long sleeves")
    browser.find_element(By.ID, "composed-button").click()
    _wait(browser, lambda d: "composed search" in d.find_element(By.ID, "summary").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".result")) == 12
    assert browser.find_element(By.ID, "error").text == ""

    # A bad query shows the server's message, not a broken page.
    box.clear()
    browser.find_element(By.ID, "search-button").click()
    _wait(browser, lambda d: "empty text" in d.find_element(By.ID, "error").text)

    # Generate: progress, then the image.
    browser.find_element(By.ID, "prompt").send_keys("a green striped shirt")
    browser.find_element(By.ID, "generate-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "gen-image").is_displayed(), timeout=120)
    assert browser.execute_script("return document.getElementById('gen-image').naturalWidth") > 0
    assert "done" in browser.find_element(By.ID, "gen-status").text


def test_the_api_docs_render_from_local_files(browser, server):
    """/docs in the browser lists the API's operations with every https request blocked (a CDN copy of
    Swagger UI could not load): its script and styles came from the server."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["https://*"]})
    browser.get(server + "/docs")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 5)
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/api/search/text", "/api/search/composed", "/api/health"} <= paths
    browser.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})


def test_filters_more_like_this_refine_and_try_on_in_the_page(browser, server, shop):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from unifashion.catalog.store import Catalog

    catalog = Catalog.open(shop.catalog)
    browser.get(server + "/")
    _wait(browser, lambda d: "products" in d.find_element(By.ID, "status").text)
    _wait(browser, lambda d: d.find_elements(By.ID, "filter-colour"))
    colours = catalog.attribute_values()["colour"]
    colour = max(colours, key=lambda c: sum(catalog.product(p)["attributes"]["colour"] == c for p in catalog.ids))
    Select(browser.find_element(By.ID, "filter-colour")).select_by_value(colour)

    # A filtered text search: only products of that colour, in the API's order.
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys("a garment with long sleeves")
    browser.find_element(By.ID, "search-button").click()
    _wait(browser, lambda d: "text search" in d.find_element(By.ID, "summary").text)
    got = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, ".result")]
    want = _api(
        server, "/api/search/text", {"text": "a garment with long sleeves", "k": 12, "attributes": {"colour": colour}}
    )
    assert got == [x["id"] for x in want["results"]] and got
    assert all(catalog.product(p)["attributes"]["colour"] == colour for p in got)

    # More like this on the first result.
    first = got[0]
    browser.find_element(By.CSS_SELECTOR, f'.result[data-id="{first}"] button.similar').click()
    _wait(browser, lambda d: "similar search" in d.find_element(By.ID, "summary").text)
    got = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, ".result")]
    want = _api(server, "/api/search/similar", {"product_id": first, "k": 12, "attributes": {"colour": colour}})
    assert got == [x["id"] for x in want["results"]] and first not in got

    # Refine: a result becomes the reference of a composed search with a new text.
    Select(browser.find_element(By.ID, "filter-colour")).select_by_value("")
    second = got[0]
    browser.find_element(By.CSS_SELECTOR, f'.result[data-id="{second}"] button.refine').click()
    assert second in browser.find_element(By.ID, "reference-note").text
    browser.find_element(By.ID, "modification").send_keys("is red with short sleeves")
    browser.find_element(By.ID, "composed-button").click()
    _wait(browser, lambda d: "composed search" in d.find_element(By.ID, "summary").text)
    got = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, ".result")]
    want = _api(
        server, "/api/search/composed", form={"product_id": second, "text": "is red with short sleeves", "k": "12"}
    )
    assert got == [x["id"] for x in want["results"]] and second not in got
    assert browser.find_element(By.ID, "error").text == ""

    # Try on without a mask: the service makes one from the pose; the picture appears.
    sample = json.loads((shop.data / "tryon.jsonl").read_text().splitlines()[0])
    for name in ("person", "cloth", "pose"):
        browser.find_element(By.ID, f"tryon-{name}").send_keys(os.path.abspath(shop.data / sample[name]))
    Select(browser.find_element(By.ID, "tryon-garment")).select_by_value("upper")
    browser.find_element(By.ID, "tryon-button").click()
    _wait(browser, lambda d: d.find_element(By.ID, "tryon-image").is_displayed(), timeout=120)
    assert browser.execute_script("return document.getElementById('tryon-image').naturalWidth") > 0
    assert "done" in browser.find_element(By.ID, "tryon-status").text


def test_the_page_asks_for_an_api_key_and_then_searches(browser, keyed_server):
    from selenium.webdriver.common.by import By

    url, key = keyed_server
    browser.get(url + "/")
    browser.execute_script("localStorage.clear()")
    browser.get(url + "/")
    _wait(browser, lambda d: d.find_element(By.ID, "key-box").is_displayed())
    _wait(browser, lambda d: "API key missing" in d.find_element(By.ID, "error").text)
    browser.find_element(By.ID, "api-key").send_keys(key)
    browser.find_element(By.ID, "key-button").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#category option:nth-child(2)"))
    browser.find_element(By.ID, "query").send_keys("a blue shirt")
    browser.find_element(By.ID, "search-button").click()
    _wait(browser, lambda d: "text search" in d.find_element(By.ID, "summary").text)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".result")) == 12
    assert browser.execute_script("return document.querySelector('.result img').naturalWidth") > 0
    browser.execute_script("localStorage.clear()")
