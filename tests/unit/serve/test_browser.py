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


@pytest.fixture(scope="module")
def server(shop):
    import uvicorn

    model, catalog = load_service(shop.model, shop.catalog)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(model, catalog), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.time() + 30
    while not srv.started and time.time() < end:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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
