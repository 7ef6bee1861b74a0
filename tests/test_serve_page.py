"""The web page of `agekit serve` in a real browser: Debian's Chromium driven by Playwright, against the real server.

Uploads the bundled photo, waits for the answer, then checks the page's DOM (one face, its age, interval and
gender) and a screenshot of what it drew (box-coloured pixels on the face box, none far from it). Every request
the page makes must go to the agekit server itself (it works offline, no CDN).
"""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from agekit.inference.defaults import example_photo_path


def chromium_path() -> str | None:
    """Debian's chromium (scripts/setup.sh installs it as root); AGEKIT_CHROMIUM overrides."""
    for cand in (os.environ.get("AGEKIT_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                 "/usr/bin/chromium"):
        if cand and Path(cand).is_file():
            return cand
    return None


CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be: run "
                                "`apt-get install -y chromium` (scripts/setup.sh does it when run as root)")
MALE = np.array([47, 128, 237])  # the page's (and agekit/inference/draw.py's) colour for a male face (the bundled
# model calls the astronaut male; see the README)


def near(img: np.ndarray, color: np.ndarray, tol: int = 40) -> np.ndarray:
    return np.abs(img.astype(int) - color).max(axis=-1) <= tol


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])  # root: no sandbox
        yield b
        b.close()


def test_page_uploads_a_photo_and_draws_its_face(agekit_server, browser, tmp_path):
    base = agekit_server.url
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    requests: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.goto(base + "/")
    page.wait_for_selector("body[data-state=ready]")
    page.wait_for_function("document.getElementById('model').textContent.includes('mobileagenet_lite0')")
    assert "90% age interval" in page.inner_text("#model")

    page.set_input_files("#file", str(example_photo_path()))
    page.wait_for_selector("body[data-state=done]", timeout=60_000)
    rec = json.loads(page.inner_text("#json"))
    rows = page.locator("#faces tbody tr")
    assert rows.count() == len(rec["faces"]) == 1
    face = rec["faces"][0]
    assert page.get_attribute("#result", "data-faces") == "1"
    assert rows.nth(0).locator("td.age").inner_text() == f"{face['age']:.1f}"
    assert 20 <= float(rows.nth(0).locator("td.age").inner_text()) <= 45
    assert rows.nth(0).locator("td.interval").inner_text() == f"{face['age_low']:.0f}–{face['age_high']:.0f}"
    assert rows.nth(0).locator("td.gender").inner_text() == face["gender"] == "male"
    assert page.inner_text("#interval-head") == "90% interval"
    assert page.inner_text("#status").startswith("1 face")

    # what is drawn: the canvas shows the photo at its own size here (512 px), the box in the face's colour
    shot = page.locator("#canvas").screenshot(path=str(tmp_path / "canvas.png"))
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    img = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"))
    k = img.shape[1] / rec["width"]
    assert abs(img.shape[0] - rec["height"] * k) <= 1 and k == pytest.approx(1.0, abs=0.01)  # +-1 px: sub-pixel layout
    img = img[:round(rec["height"] * k)]
    x0, y0, x1, y1 = (round(v * k) for v in face["box"])
    photo = np.asarray(Image.open(example_photo_path()).convert("RGB").resize(img.shape[1::-1])).astype(int)
    # drawn = in the box colour where the photo is not (the suit and the flag are reddish themselves)
    drawn = near(img, MALE) & (np.abs(img.astype(int) - photo).max(axis=-1) > 50)
    mid = slice(y0 + 8, y1 - 8)
    for edge in (drawn[mid, x0 - 2:x0 + 3], drawn[mid, x1 - 3:x1 + 2], drawn[y1 - 2:y1 + 3, x0 + 8:x1 - 8]):
        assert edge.any(axis=1 if edge.shape[0] > edge.shape[1] else 0).mean() > 0.9  # the box's sides and bottom
    assert drawn[max(0, y0 - 20):y0 - 3, x0 + 2:x0 + 40].mean() > 0.4  # the label's background above the box
    assert drawn[y0 + 10:y1 - 10, x0 + 10:x1 - 10].mean() < 0.02  # the face itself is not painted over
    assert drawn[:, x1 + 120:].mean() < 0.001 and drawn[y1 + 60:, :].mean() < 0.001  # nothing drawn away from the face
    # the photo itself is there: away from the drawing the canvas is the uploaded image
    assert np.abs(img[y1 + 60:].astype(int) - photo[y1 + 60:]).mean() < 6

    # offline: every request went to the agekit server (the photo itself is read from a blob: URL)
    assert requests and all(u.startswith(base) or u.startswith(("blob:", "data:")) for u in requests), requests
    assert not problems, problems

    # a file that is not an image: the server's one-line reason is shown, nothing is drawn
    page.set_input_files("#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello\n"}])
    page.wait_for_selector("body[data-state=error]", timeout=30_000)
    assert "not an image" in page.inner_text("#status") and "415" in page.inner_text("#status")
    assert page.locator("#result").is_hidden()
    page.close()


def test_api_docs_render_offline(agekit_server, browser):
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(agekit_server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path=\"/v1/predict\"]", timeout=30_000)
    assert "agekit" in page.inner_text(".swagger-ui .info")
    assert all(u.startswith(agekit_server.url) or u.startswith(("blob:", "data:")) for u in requests), requests
    page.close()
