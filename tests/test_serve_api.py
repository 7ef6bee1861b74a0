"""`agekit serve` over real HTTP: the real CLI and uvicorn on a loopback port, the bundled model, no mocks.

The shared server (conftest ``agekit_server``) runs 2 workers with --max-bytes 2000000 and --max-pixels 4000000;
``busy_server`` runs 1 worker, a queue of 1 and a 10 ms answer timeout, so every admitted upload times out (504)
while its job still holds its slot, and the others find the queue full (503).
"""
from __future__ import annotations

import io
import json
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agekit.cli.main import app
from agekit.inference.defaults import example_photo_path
from agekit.inference.predictor import STAGES

PHOTO = example_photo_path()


def png_bomb(w: int = 30_000, h: int = 30_000) -> bytes:
    """A real, valid 1-bit PNG: ~100 KB on the wire that decodes to w x h pixels (900 MP by default)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    rows = (b"\0" + b"\0" * ((w + 7) // 8)) * 500
    idat = b"".join(comp.compress(rows) for _ in range(h // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def upload(url: str, data: bytes, name: str = "photo.jpg", mime: str = "image/jpeg", timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files={"file": (name, data, mime)}, timeout=timeout)


def assert_one_line_error(r: httpx.Response, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert "\n" not in r.text.strip() and "Traceback" not in r.text
    for w in words:
        assert w in body["error"], body["error"]
    return body["error"]


@pytest.fixture(scope="module")
def busy_server():
    """The same app and pool as `agekit serve --workers 1 --max-queue 1 --timeout 0.01 --upload-timeout 0.5
    --cors-origin http://example.test`, run by uvicorn on a loopback port inside the test process (the CLI is
    exercised by ``agekit_server``; this saves a second interpreter start)."""
    import threading
    from types import SimpleNamespace

    import uvicorn

    from agekit.serving.app import create_app
    from agekit.serving.config import ServeConfig
    from agekit.serving.process import free_port

    cfg = ServeConfig(port=free_port(), workers=1, max_queue=1, timeout=0.01, upload_timeout=0.5,
                      cors_origins=["http://example.test"])
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield SimpleNamespace(url=f"http://{cfg.host}:{cfg.port}")
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def cli_json(tmp_path_factory) -> dict:
    """What `agekit predict PHOTO --out x.json` writes for the photo (the schema the API must return)."""
    out = tmp_path_factory.mktemp("cli") / "x.json"
    r = CliRunner().invoke(app, ["predict", str(PHOTO), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())[0]


def test_photo_upload_returns_the_predict_json_with_timings(agekit_server, cli_json):
    r = upload(agekit_server.url, PHOTO.read_bytes(), PHOTO.name)
    assert r.status_code == 200, r.text
    rec = r.json()
    # the same record as `agekit predict --out x.json`: same keys at every level, same faces and ages
    assert set(rec) == set(cli_json)
    assert [set(f) for f in rec["faces"]] == [set(f) for f in cli_json["faces"]]
    assert rec["name"] == PHOTO.name and rec["path"] is None and rec["status"] == "ok"
    assert (rec["width"], rec["height"]) == (cli_json["width"], cli_json["height"]) == (512, 512)
    assert len(rec["faces"]) == 1
    face, ref = rec["faces"][0], cli_json["faces"][0]
    assert face["age"] == pytest.approx(ref["age"], abs=1e-3) and 20 < face["age"] < 45
    assert face["gender"] == ref["gender"] and face["gender_prob"] == pytest.approx(ref["gender_prob"], abs=1e-4)
    assert face["age_low"] < face["age"] < face["age_high"]  # the bundled model is calibrated
    np.testing.assert_allclose(face["box"], ref["box"], atol=0.5)
    # timings: the Predictor's stages plus the server's queue wait and total
    assert set(STAGES) <= set(rec["timings"]) and {"queue", "total"} <= set(rec["timings"])
    assert rec["timings"]["total"] >= rec["timings"]["infer"] > 0


def test_photo_without_face_is_ok_with_no_faces(agekit_server):
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))).save(buf, "PNG")
    r = upload(agekit_server.url, buf.getvalue(), "gradient.png", "image/png")
    assert r.status_code == 200 and r.json()["faces"] == [] and r.json()["status"] == "no face detected"


def test_bad_uploads_get_one_line_4xx(agekit_server):
    url = agekit_server.url
    jpg = PHOTO.read_bytes()
    assert_one_line_error(upload(url, b"this is not a picture\n", "notes.txt", "text/plain"), 415, "not an image")
    assert_one_line_error(upload(url, b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20, "fake.jpg"), 415, "not an image")
    assert_one_line_error(upload(url, jpg[: len(jpg) // 2], "half.jpg"), 400, "truncated")
    assert_one_line_error(upload(url, b"", "empty.jpg"), 400, "empty")
    # a real decompression bomb (valid PNG, 100 KB -> 900 MP) and an honest image over --max-pixels
    assert_one_line_error(upload(url, png_bomb(), "bomb.png", "image/png"), 413, "too large")
    big = io.BytesIO()
    Image.new("L", (2500, 2000)).save(big, "PNG")
    assert_one_line_error(upload(url, big.getvalue(), "big.png", "image/png"), 413, "2500x2000", "4000000")


def test_requests_that_are_not_an_upload_get_one_line_errors(agekit_server):
    url = agekit_server.url
    assert_one_line_error(httpx.post(f"{url}/v1/predict"), 400, "missing form field 'file'")
    # a server-side path or a URL given instead of a file is refused, never opened or fetched
    for value in ("/etc/passwd", str(PHOTO), "http://127.0.0.1:1/x.jpg"):
        r = httpx.post(f"{url}/v1/predict", data={"file": value})
        assert r.status_code == 400 and "root:" not in r.text, r.text
        assert_one_line_error(r, 400)
    assert_one_line_error(httpx.get(f"{url}/v1/predict"), 405)
    assert_one_line_error(httpx.get(f"{url}/v1/nothing-here"), 404)


def test_oversize_upload_is_413_declared_or_streamed(agekit_server):
    url = agekit_server.url
    blob = np.random.default_rng(0).integers(0, 256, 3_000_000, dtype=np.uint8).tobytes()
    assert_one_line_error(upload(url, blob, "huge.jpg"), 413, "2000000")  # Content-Length says it

    def chunks():  # no Content-Length: chunked transfer, refused once 2 MB have arrived
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="huge.jpg"\r\n\r\n'
        yield head
        for i in range(0, len(blob), 65536):
            yield blob[i:i + 65536]
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{url}/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"},
                   timeout=60)
    assert_one_line_error(r, 413, "too large")
    assert upload(url, PHOTO.read_bytes(), PHOTO.name).status_code == 200  # the server is fine afterwards


def test_16_parallel_uploads_all_succeed(agekit_server):
    data = PHOTO.read_bytes()
    with ThreadPoolExecutor(16) as ex:
        rs = list(ex.map(lambda i: upload(agekit_server.url, data, f"p{i}.jpg", timeout=120), range(16)))
    assert [r.status_code for r in rs] == [200] * 16, [r.text for r in rs if r.status_code != 200]
    ages = [r.json()["faces"][0]["age"] for r in rs]
    assert max(ages) - min(ages) < 1e-3  # same photo, same answer, whichever worker ran it
    assert sorted(r.json()["name"] for r in rs) == sorted(f"p{i}.jpg" for i in range(16))


def test_health_models_and_offline_docs(agekit_server):
    url = agekit_server.url
    h = httpx.get(f"{url}/health").json()
    assert h["status"] == "ok" and h["workers"] == 2 and h["capacity"] == 2 + 32
    m = httpx.get(f"{url}/v1/models").json()["models"]
    assert len(m) == 1 and m[0]["model_name"] == "mobileagenet_lite0" and m[0]["interval_level"] == pytest.approx(0.9)
    assert "/" not in m[0]["file"]  # no server paths
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and {"413", "415", "503", "504"} <= set(spec["paths"]["/v1/predict"]["post"]["responses"])
    docs = httpx.get(f"{url}/docs").text
    assert "swagger-ui-bundle.js" in docs and "cdn" not in docs.lower() and "https://" not in docs
    assert httpx.get(f"{url}/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # the page loads nothing from elsewhere


def test_cors_is_off_unless_asked_for(agekit_server, busy_server):
    origin = {"Origin": "http://example.test"}
    assert "access-control-allow-origin" not in httpx.get(f"{agekit_server.url}/health", headers=origin).headers
    pre = httpx.options(f"{agekit_server.url}/v1/predict", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers
    # --cors-origin http://example.test: that origin only
    assert httpx.get(f"{busy_server.url}/health", headers=origin).headers["access-control-allow-origin"] == "http://example.test"
    other = httpx.get(f"{busy_server.url}/health", headers={"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in other.headers


def test_timeout_gives_504_and_a_full_queue_gives_503_with_retry_after(busy_server):
    """1 worker + a queue of 1: at most 2 jobs in the server. Each admitted upload times out after 10 ms (504), but
    its job keeps its slot until it has really finished, so concurrent uploads meanwhile get 503 + Retry-After."""
    big = io.BytesIO()
    Image.open(PHOTO).resize((1600, 1600)).save(big, "JPEG", quality=90)  # a few hundred ms of work per upload
    data = big.getvalue()
    err = assert_one_line_error(upload(busy_server.url, data, "slow.jpg"), 504, "0.01 s")
    assert "slow.jpg" in err
    with ThreadPoolExecutor(12) as ex:
        rs = list(ex.map(lambda i: upload(busy_server.url, data, f"c{i}.jpg"), range(36)))
    codes = [r.status_code for r in rs]
    assert set(codes) <= {503, 504}, codes
    full = [r for r in rs if r.status_code == 503]
    assert full, codes
    for r in full:
        assert_one_line_error(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
    # the jobs finish, the slots come back: the server answers again (still with its 10 ms limit -> 504, not 503)
    deadline = time.monotonic() + 60
    while httpx.get(f"{busy_server.url}/health").json()["jobs"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upload(busy_server.url, data, "again.jpg").status_code == 504


def test_stalled_upload_gets_408(busy_server):
    def slow():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        time.sleep(2)  # the server's --upload-timeout is 0.5 s
        yield b"\r\n--b--\r\n"

    r = httpx.post(f"{busy_server.url}/v1/predict", content=slow(), headers={"content-type": "multipart/form-data; boundary=b"},
                   timeout=30)
    assert_one_line_error(r, 408, "not received")


def test_serve_cli_reports_bad_options_in_one_line(tmp_path):
    runner = CliRunner()
    cases = [(["serve", "--model", str(tmp_path / "missing.safetensors")], "model file not found"),
             (["serve", "--backend", "nope"], "unknown backend"),
             (["serve", "--cors-origin", "example.org"], "must look like https://"),
             (["serve", "--log-level", "loud"], "--log-level")]
    for args, words in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert words in r.output and "Traceback" not in r.output, r.output


def test_serving_defaults_and_package_data():
    import tomllib
    from fnmatch import fnmatch

    from agekit.data.imageio import MAX_PIXELS
    from agekit.serving import defaults
    from agekit.serving.app import STATIC_DIR

    assert defaults.MAX_PIXELS == MAX_PIXELS  # one limit for files and uploads
    assert defaults.HOST == "127.0.0.1"
    globs = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agekit"]
    files = [p.relative_to(STATIC_DIR.parent.parent).as_posix() for p in STATIC_DIR.iterdir()]
    assert {"index.html", "app.js", "style.css"} <= {Path(f).name for f in files}
    missing = [f for f in files if not any(fnmatch(f, g) for g in globs)]
    assert not missing, f"static files not shipped as package data: {missing}"


def test_load_benchmark_runs_against_the_server(agekit_server, load_script):
    """benchmarks/load_test.py's client loop (a few clients, 2 s; the real 50 x 60 s run is a benchmark, not a test)."""
    import asyncio

    mod = load_script("benchmarks/load_test.py", "agekit_load_test")
    res = asyncio.run(mod.run_load(agekit_server.url, PHOTO.read_bytes(), clients=4, duration=2.0, pid=agekit_server.pid))
    assert res["ok"] > 0 and res["failed"] == 0 and res["requests"] == res["ok"] + res["n_503"]
    assert res["latency_ok"]["p50_ms"] > 0 and res["rss_mb_peak"] > 100
    with pytest.raises(SystemExit, match="loopback"):
        asyncio.run(mod.run_load("http://192.0.2.1:8000", b"", clients=1, duration=0.1))
