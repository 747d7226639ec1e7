"""Screenshot of the model page over a project: python docs/screenshot.py PROJECT OUT.png

Starts `python -m pipeline.ops.app` on PROJECT (its registry and test split), opens it in Debian's
Chromium through Playwright, translates the first test image and saves the page as OUT.png.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(project: Path, out: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.ops.app", "--port", str(port), "--project", str(project)],
        cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 860, "height": 520})
            page.goto(url)
            page.add_style_tag(
                content="figure img { max-width: 190px; max-height: 190px; }"
            )  # a small PNG for the README
            page.wait_for_selector("#test-image option:nth-child(2)", state="attached")
            page.select_option("#test-image", index=1)
            page.click("#use-test")
            page.wait_for_selector("#target", timeout=120_000)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]))
