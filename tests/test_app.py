"""The model page in a real browser: Debian's Chromium driven by Playwright.

Skips with one line where Chromium or Playwright is missing (CI installs both). Set
P2P_SCREENSHOT=docs/images/app.png to keep the screenshot (the README's is made that way).
"""

import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import copy_workspace, dvc, run_cli, tool_env, write_params
from servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.server]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def site(reproduced, tmp_path_factory):
    """The page over a reproduced workspace with two versions: v1 @champion, v2 @challenger."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the browser test needs it")
    pytest.importorskip("playwright", reason="Playwright is not installed (pip install playwright)")
    project = copy_workspace(reproduced[0], tmp_path_factory.mktemp("app") / "project")
    # A model trained anew (another seed) is the second registered version: the challenger.
    write_params(project / "params.yaml", train={"seed": 1})
    dvc(project, "repro", timeout=600)
    port = free_port()
    log = open(project / "app.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.ops.app",
            "--port",
            str(port),
            "--max-megapixels",
            "1",
            "--max-upload-mb",
            "2",
        ],
        cwd=project,
        env=tool_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        os.killpg(server.pid, signal.SIGKILL)
        pytest.fail(f"the app did not start: {(project / 'app.log').read_text()[-2000:]}")
    yield project, url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def page(site):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(site[1])
        page.wait_for_selector("#ref option", state="attached")
        yield page
        browser.close()


def _pixels(page, selector) -> np.ndarray:
    src = page.get_attribute(selector, "src")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))


def _upload(page, path: Path, output: str) -> str:
    """Upload `path`; returns the page's error message ('' when the output came)."""
    page.evaluate("document.getElementById('result').innerHTML = ''")
    page.set_input_files("#upload", str(path))
    page.wait_for_function(
        f"document.querySelector('#{output}') || document.getElementById('error').textContent", timeout=120_000
    )
    return page.inner_text("#error")


def test_upload_translates_like_pix2pix_predict_of_the_same_version(site, page, tmp_path):
    project, _ = site
    # A test label map, uploaded at its own odd size (not the training size).
    label = Image.open(next((project / "data/raw/test").glob("*.png"))).convert("RGB")
    w, h = label.size
    upload = tmp_path / "labels.png"
    label.crop((w // 2, 0, w, h)).resize((45, 37)).save(upload)
    page.select_option("#ref", "challenger")
    page.wait_for_function("document.getElementById('info').textContent.includes('version 2 (@challenger)')")
    page.select_option("#ref", "champion")
    page.wait_for_function("document.getElementById('info').textContent.includes('version 1 (@champion)')")
    assert (
        "version 1" in page.inner_text("#info")
        and "l1" in page.inner_text("#info")
        and "data fingerprint" in page.inner_text("#info")
    )
    assert _upload(page, upload, "output-champion") == ""
    shown = _pixels(page, "#output-champion")
    assert shown.shape[:2] == (37, 45)
    # The same version's ONNX file through the library's CLI gives the same pixels.
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"  # a client of its own: nothing global is set
    location = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_download_uri(
        "pix2pix-synthetic", "1"
    )
    onnx = next(Path(location.removeprefix("file://")).rglob("generator.onnx"))
    r = run_cli("predict", "--model", onnx, "--input", upload, "--output", tmp_path / "cli.png")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(shown, np.asarray(Image.open(tmp_path / "cli.png")))


def test_bad_uploads_get_a_message_and_the_server_keeps_serving(site, page, tmp_path):
    bad = {"notes.txt": b"this is not an image", "empty.png": b""}
    big = tmp_path / "big.png"
    Image.new("RGB", (1600, 1000), (9, 9, 9)).save(big)  # 1.6 MP over this server's 1 MP limit
    expected = {"notes.txt": "not a readable image", "empty.png": "empty (0 bytes)", "big.png": "1.6 megapixels"}
    for name in expected:
        path = big if name == "big.png" else tmp_path / name
        if name in bad:
            path.write_bytes(bad[name])
        assert expected[name] in _upload(page, path, "output-champion"), name
        assert page.query_selector("#output-champion") is None
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (30, 90, 200)).save(good)
    assert _upload(page, good, "output-champion") == ""
    assert _pixels(page, "#output-champion").shape[:2] == (64, 64)


def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(site):
    """413 with one line, from the Content-Length alone and from a chunked body that streams
    past the limit; the server keeps serving."""
    import http.client
    import json as json_

    _, url = site
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/translate?model=pix2pix-synthetic")
    conn.putheader("Content-Length", str(300_000_000))  # declared, never sent
    conn.endheaders()
    answer = conn.getresponse()
    assert answer.status == 413
    assert "more than this page accepts (2 MB)" in json_.loads(answer.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    chunks = (b"x" * 500_000 for _ in range(10))  # 5 MB, chunked: no length up front
    conn.request("POST", "/api/translate?model=pix2pix-synthetic", body=chunks, encode_chunked=True)
    answer = conn.getresponse()
    assert answer.status == 413 and "--max-upload-mb" in json_.loads(answer.read())["error"]
    assert urllib.request.urlopen(f"{url}/health", timeout=5).status == 200


def test_champion_and_challenger_side_by_side_on_a_test_image(site, page, tmp_path):
    page.check("#compare")
    first = page.eval_on_selector("#test-image", "s => s.options[1].value")
    page.select_option("#test-image", first)
    page.evaluate("document.getElementById('result').innerHTML = ''")
    page.click("#use-test")
    page.wait_for_selector("#target")
    captions = page.inner_text("#result")
    assert "@champion v1" in captions and "@challenger v2" in captions and "target" in captions
    assert _pixels(page, "#output-champion").shape == _pixels(page, "#target").shape
    shot = tmp_path / "app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("P2P_SCREENSHOT"):
        shutil.copy(shot, os.environ["P2P_SCREENSHOT"])
