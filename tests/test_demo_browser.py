"""rs-demo in a real browser: the app is started as a user starts it, then driven in headless Chromium.

The fixture starts ``rs-demo`` on 127.0.0.1 (a free port) with the ``smoke`` budget: every fallback model is built by
its package's own training command in a temporary cache (a few training steps each, so the outputs are a toy's) and
the app serves all four tabs from one process. Playwright drives Debian's ``/usr/bin/chromium`` (``.ci/run`` installs
it; Playwright's own browser download is not used): on each tab it presses the run button with the example input
already filled in, waits for the outputs, checks them and saves a screenshot to
``runs/demo-screenshots/<package>.png`` (or ``$RS_DEMO_SCREENSHOTS/<package>.png``).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Headless Chromium on a machine whose only network is loopback: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(os.environ.get("RS_DEMO_SCREENSHOTS") or ROOT / "runs" / "demo-screenshots")
STARTUP_TIMEOUT_S = 900  # builds four fallbacks first: a couple of minutes on 2 cores, more on a busy machine
RUN_TIMEOUT_MS = 180_000
SCENE_CLASSES = ("airport", "harbor", "parking_lot", "storage_tanks", "dense_residential", "farmland", "forest",
                 "river", "beach", "sports_field", "freeway")


def rs_demo_executable() -> str:
    exe = shutil.which("rs-demo", path=str(Path(sys.executable).parent))
    assert exe is not None, "rs-demo is not installed in this environment (uv sync installs the demo member)"
    return exe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory):
    work = tmp_path_factory.mktemp("rs-demo")
    log_path = work / "rs-demo.log"
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(work / "gradio")}
    command = [rs_demo_executable(), "--cache-dir", str(work / "cache"), "--budget", "smoke", "--host", "127.0.0.1",
               "--port", str(port)]
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not answers(url):
            tail = log_path.read_text(errors="replace")[-3000:]
            assert process.poll() is None, f"rs-demo exited with code {process.returncode}:\n{tail}"
            assert time.monotonic() < deadline, f"rs-demo did not answer on {url} within {STARTUP_TIMEOUT_S} s:\n{tail}"
            time.sleep(2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(demo_url):
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium); " \
                               ".ci/run does"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(demo_url)
        expect(page.get_by_role("heading", name="rs-vlm demo")).to_be_visible(timeout=60_000)
        yield page
        browser.close()


def run_tab(page, package: str, tab_title: str) -> None:
    """Open the tab, press its run button (the first example is already filled in)."""
    page.get_by_role("tab", name=tab_title).click()
    page.locator(f"#{package}-run").click()


def expect_picture(page, elem_id: str) -> None:
    """The output image ``elem_id`` appears and has decoded pixels."""
    image = page.locator(f"#{elem_id} img")
    expect(image).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth * img.naturalHeight") > 0


def screenshot(page, package: str) -> None:
    path = SCREENSHOTS / f"{package}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_names_every_model_and_its_source(page):
    header = page.locator("ul").first.inner_text()
    for package in ("bimors", "icipnet", "clvnet", "rscovlm"):
        assert f"{package}: fallback" in header
    assert "untrained-scale toy" in header


def test_scene_classification_tab_shows_top_k_classes(page):
    run_tab(page, "bimors", "Scene classification · BiMoRS")
    expect_picture(page, "bimors-picture")
    label = page.locator("#bimors-label")
    expect(label).to_contain_text("%", timeout=RUN_TIMEOUT_MS)
    text = label.inner_text()
    assert sum(name in text for name in SCENE_CLASSES) == 5  # top-5 of the 11 synthetic classes
    screenshot(page, "bimors")


def test_referring_segmentation_tab_shows_mask_overlay_and_json(page):
    run_tab(page, "icipnet", "Referring segmentation · ICIPNet")
    expect_picture(page, "icipnet-overlay")
    record = page.locator("#icipnet-json")
    expect(record).to_contain_text("area_fraction", timeout=RUN_TIMEOUT_MS)
    expect(record).to_contain_text(page.locator("#icipnet-expression textarea, #icipnet-expression input")
                                   .first.input_value())
    screenshot(page, "icipnet")


def test_grounded_caption_tab_shows_caption_and_masks(page):
    run_tab(page, "clvnet", "Grounded caption · CLV-Net")
    expect_picture(page, "clvnet-overlay")
    caption = page.locator("#clvnet-caption textarea")
    expect(caption).not_to_have_value("", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#clvnet-json")).to_contain_text("phrases")
    screenshot(page, "clvnet")


def test_chat_tab_shows_transcript_parse_result_and_picture(page):
    run_tab(page, "rscovlm", "Chat with zoom-in · RSCoVLM")
    expect_picture(page, "rscovlm-overlay")
    chat = page.locator("#rscovlm-chat")
    expect(chat).to_contain_text("Detect all", timeout=RUN_TIMEOUT_MS)  # the user's turn of round 0
    expect(chat).to_contain_text("detection parse")  # parsed boxes, or the parse failure, reported as such
    expect(page.locator("#rscovlm-json")).to_contain_text("rounds")
    screenshot(page, "rscovlm")


def test_rs_demo_help_explains_every_option():
    out = subprocess.run([rs_demo_executable(), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--bimors", "--icipnet", "--clvnet", "--rscovlm", "--cache-dir", "--budget", "--host", "--port",
                   "--threads", "--prepare-only"):
        assert option in out
