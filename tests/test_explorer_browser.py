"""`comet-nb explore` in a real browser: the Voilà page loads, training shows its figures, and moving the κ slider changes the figure.

Needs Chromium (Debian's `chromium` package; `$COMET_NB_CHROMIUM` names another binary) and the `playwright` package (in the `[dev]`
extra). Where either is missing the test is skipped with the reason; `.ci/run` installs Chromium where it can.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium():
    for name in (os.environ.get("COMET_NB_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name): return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _wait_listening(port: int, proc, timeout: float = 180):
    "Wait until the server accepts connections (a GET of the page would start a kernel, and a training run, of its own)."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f"comet-nb explore exited with status {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2): return
        except OSError: time.sleep(0.5)
    pytest.fail(f"port {port} did not open within {timeout} s")


@pytest.fixture
def chromium():
    path = _chromium()
    if path is None: pytest.skip("Chromium is not installed (apt-get install chromium, or set $COMET_NB_CHROMIUM)")
    return path


@pytest.fixture
def sync_api():
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install -e '.[dev]')")


@pytest.fixture
def server(tmp_path, chromium, sync_api):
    from comet_nb.explorer import ExplorerSession
    ExplorerSession(device="cpu").features("simplenet", "brick")   # warm the feature cache ($COMET_NB_CACHE, shared with the server)
    port, log = _free_port(), open(tmp_path / "server.log", "w")
    cmd = [sys.executable, "-c", "import sys; from comet_nb.cli import main; sys.exit(main())", "explore", "--device", "cpu",
           "--epochs", "1", "--no-browser", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/", tmp_path / "server.log"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(30)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
        log.close()


IMAGE_SRCS = "() => [...document.querySelectorAll('.widget-image')].map(i => i.src)"


def test_explore_page_loads_and_the_kappa_slider_changes_the_figure(server, chromium, sync_api):
    url, log = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url, timeout=120_000)
            kappa = page.locator(".widget-slider", has_text="κ (Eq. 2)")
            kappa.wait_for(timeout=120_000)
            page.get_by_text("done: 1 epochs").wait_for(timeout=300_000)          # the run the page starts: one epoch, then its figures
            page.wait_for_function("() => [...document.querySelectorAll('.widget-image')].every(i => i.naturalWidth > 300)", timeout=60_000)
            assert "1.50" in kappa.inner_text()
            body = page.inner_text("body")
            assert "EfficientNet-Lite0, ImageNet weights shipped with the kit" in body          # the backbone, said once, in words
            assert "Warning" not in body and "warnings.warn" not in body, body[-2000:]         # no raw Python warning on the page
            before, shot = page.evaluate(IMAGE_SRCS), page.locator(".widget-image").first.screenshot()
            kappa.locator(".noUi-handle").focus()
            for _ in range(6): page.keyboard.press("ArrowRight")                   # κ 1.50 → 1.80, as a user with the keyboard
            page.wait_for_function(f"() => document.querySelector('.widget-image').src !== {before[0]!r}", timeout=60_000)
            page.wait_for_timeout(1500)                                             # let the last redraw land
            assert "1.80" in kappa.inner_text()
            after = page.evaluate(IMAGE_SRCS)
            assert after[0] != before[0], "the score histogram did not change"
            assert after[1] == before[1], "the λ figure changed, but κ does not enter it (training had finished)"
            assert page.locator(".widget-image").first.screenshot() != shot
        finally:
            browser.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
