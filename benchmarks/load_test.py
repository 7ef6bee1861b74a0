#!/usr/bin/env python
"""Load test of `agekit serve`: many concurrent clients uploading a photo for a fixed time, on loopback only.

    python benchmarks/load_test.py                         # 50 clients x 60 s against a fresh server (default options)
    python benchmarks/load_test.py --clients 10 --duration 10 --name smoke
    python benchmarks/load_test.py --server-args "--backend onnx --max-queue 16"

Starts `agekit serve` on 127.0.0.1 (a free port), warms it up, then runs ``--clients`` client loops for
``--duration`` seconds. Each loop uploads the photo, waits for the answer, and goes again; after a 503 it waits
the server's Retry-After, as a well-behaved client does. Loops are bounded in time and in count, and everything
stops by itself. Reports throughput, latency percentiles (answered requests, and 200s alone), status and error
counts, and the server's memory (RSS) before, during and after; prints a table and writes
``benchmarks/results/<name>.json``.

Goals (reported, never asserted): no failed request other than the designed 503s, p99 of the 200s within the
server's --timeout, and memory stable (RSS after - before within 100 MB, and no growth from the first to the
second half of the run).
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from agekit.inference.defaults import example_photo_path  # noqa: E402
from agekit.serving import defaults as D  # noqa: E402

MEMORY_GOAL_MB = 100.0


def log(msg: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    a = np.asarray(xs) * 1e3
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "mean_ms": float(a.mean())}


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


async def run_load(url: str, data: bytes, clients: int, duration: float, pid: int | None = None,
                   name: str = "photo.jpg", request_timeout: float = 120.0, max_requests_per_client: int = 100_000,
                   honor_retry_after: bool = True) -> dict[str, Any]:
    """``clients`` loops uploading ``data`` to ``url`` for ``duration`` s; the counts, latencies and server RSS."""
    if not is_loopback(url):
        raise SystemExit(f"refusing to load-test {url}: loopback addresses only")
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lat_all: list[float] = []
    lat_ok: list[float] = []
    server_total: list[float] = []
    rss_samples: list[tuple[float, float]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t_start = time.perf_counter()
    deadline = t_start + duration

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits) as c:
            for _ in range(max_requests_per_client):  # bounded in count as well as in time
                if time.perf_counter() >= deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await c.post("/v1/predict", files={"file": (name, data, "image/jpeg")})
                except httpx.HTTPError as e:
                    errors[type(e).__name__] += 1
                    await asyncio.sleep(0.1)
                    continue
                dt = time.perf_counter() - t0
                statuses[str(r.status_code)] += 1
                lat_all.append(dt)
                if r.status_code == 200:
                    lat_ok.append(dt)
                    server_total.append(float(r.json()["timings"].get("total", 0.0)))
                elif r.status_code == 503 and honor_retry_after:
                    wait = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

    async def sample_rss() -> None:
        while time.perf_counter() < deadline:
            v = rss_mb(pid)
            if v is not None:
                rss_samples.append((time.perf_counter() - t_start, v))
            await asyncio.sleep(1.0)

    await asyncio.gather(sample_rss(), *(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - t_start
    ok = statuses.get("200", 0)
    failed = sum(n for s, n in statuses.items() if s not in ("200", "503")) + sum(errors.values())
    half = duration / 2
    first = [v for t, v in rss_samples if t < half]
    second = [v for t, v in rss_samples if t >= half]
    return {
        "clients": clients, "duration_s": duration, "elapsed_s": elapsed, "requests": sum(statuses.values()),
        "ok": ok, "throughput_rps": ok / elapsed, "status_counts": dict(sorted(statuses.items())),
        "n_503": statuses.get("503", 0), "errors": dict(errors), "failed": failed,
        "latency_ok": percentiles(lat_ok), "latency_answered": percentiles(lat_all),
        "server_total": percentiles(server_total),
        "rss_mb_samples": [[round(t, 1), round(v, 1)] for t, v in rss_samples],
        "rss_mb_peak": max((v for _, v in rss_samples), default=None),
        "rss_mb_first_half_max": max(first, default=None), "rss_mb_second_half_max": max(second, default=None),
    }


def print_table(res: dict[str, Any], goals: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    lo, la = res["latency_ok"], res["latency_answered"]
    fmt = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    t = Table(title=f"agekit serve load test: {res['clients']} clients x {res['duration_s']:g} s (loopback)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    rows = [
        ("requests answered", str(res["requests"])), ("200 OK", str(res["ok"])),
        ("throughput (200/s)", fmt(res["throughput_rps"], 2)), ("503 (queue full, by design)", str(res["n_503"])),
        ("failed (other status or no answer)", str(res["failed"])),
        ("latency 200 p50 / p95 / p99 ms", f"{fmt(lo['p50_ms'], 0)} / {fmt(lo['p95_ms'], 0)} / {fmt(lo['p99_ms'], 0)}"),
        ("latency 200 max ms", fmt(lo["max_ms"], 0)),
        ("latency all answers p50 / p99 ms", f"{fmt(la['p50_ms'], 0)} / {fmt(la['p99_ms'], 0)}"),
        ("server-side total p50 ms", fmt(res["server_total"]["p50_ms"], 0)),
        ("server RSS before / after MB", f"{fmt(res.get('rss_mb_before'))} / {fmt(res.get('rss_mb_after'))}"),
        ("server RSS peak MB (1st / 2nd half)", f"{fmt(res['rss_mb_peak'])} ({fmt(res['rss_mb_first_half_max'])} / "
                                               f"{fmt(res['rss_mb_second_half_max'])})"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    for k, g in goals.items():
        t.add_row(f"goal: {k}", ("[green]pass[/] " if g["passed"] else "[red]FAIL[/] ") + g["value"])
    Console().print(t)


def evaluate_goals(res: dict[str, Any], timeout: float) -> dict[str, Any]:
    p99 = res["latency_ok"]["p99_ms"]
    growth = None if res.get("rss_mb_before") is None or res.get("rss_mb_after") is None else \
        res["rss_mb_after"] - res["rss_mb_before"]
    halves = tuple(None if v is None else round(v, 1) for v in (res["rss_mb_first_half_max"], res["rss_mb_second_half_max"]))
    return {
        "no failed requests (503 by design only)": {"passed": res["failed"] == 0 and res["ok"] > 0,
                                                    "value": f"{res['failed']} failed"},
        "p99 of 200s within --timeout": {"passed": p99 is not None and p99 <= timeout * 1e3,
                                         "value": f"{p99 or float('nan'):.0f} ms <= {timeout * 1e3:.0f} ms"},
        "memory stable": {"passed": growth is not None and growth <= MEMORY_GOAL_MB and None not in halves
                          and halves[1] <= halves[0] + MEMORY_GOAL_MB / 2,
                          "value": f"after - before {growth if growth is not None else float('nan'):+.1f} MB; "
                                   f"peak 1st/2nd half {halves[0]} / {halves[1]} MB"},
    }


def machine_info() -> dict[str, Any]:
    import fastapi
    import uvicorn

    return {"hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__, "httpx": httpx.__version__,
            "loadavg_start": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--image", type=Path, default=example_photo_path(), help="photo to upload (default: the bundled one)")
    ap.add_argument("--server-args", default="", help="extra `agekit serve` options, e.g. '--backend onnx --workers 2'")
    ap.add_argument("--url", default=None, help="an already running server on loopback instead of starting one")
    ap.add_argument("--pid", type=int, default=None, help="with --url: the server's process id, for its memory")
    ap.add_argument("--warmup", type=int, default=8, help="requests before measuring")
    ap.add_argument("--no-backoff", action="store_true", help="retry at once after a 503 instead of waiting Retry-After")
    ap.add_argument("--name", default="load-test")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.clients < 1 or not 0 < args.duration <= 3600:
        ap.error("--clients must be >= 1 and --duration in (0, 3600] s")
    data = args.image.read_bytes()
    server_args = shlex.split(args.server_args)
    timeout = D.TIMEOUT_S
    if "--timeout" in server_args:
        timeout = float(server_args[server_args.index("--timeout") + 1])
    info = machine_info()

    from agekit.serving.process import ServerProcess

    srv = None
    if args.url is None:
        log(f"starting agekit serve {' '.join(server_args)} on 127.0.0.1 ...")
        srv = ServerProcess(server_args, log=Path(tempfile.mkdtemp(prefix="agekit-load-")) / "server.log").start()
        url, pid = srv.url, srv.pid
    else:
        url, pid = args.url.rstrip("/"), args.pid
    try:
        health = httpx.get(f"{url}/health", timeout=30).json()
        model = httpx.get(f"{url}/v1/models", timeout=30).json()["models"][0]
        log(f"warm-up: {args.warmup} requests")
        for _ in range(args.warmup):
            httpx.post(f"{url}/v1/predict", files={"file": (args.image.name, data, "image/jpeg")}, timeout=120).raise_for_status()
        before = rss_mb(pid)
        log(f"load: {args.clients} clients for {args.duration:g} s")
        res = asyncio.run(run_load(url, data, args.clients, args.duration, pid, args.image.name,
                                   honor_retry_after=not args.no_backoff))
        t_end = time.monotonic() + 30
        while httpx.get(f"{url}/health", timeout=30).json()["jobs"] and time.monotonic() < t_end:
            time.sleep(0.2)  # let the last jobs finish before measuring memory after
        res["rss_mb_before"], res["rss_mb_after"] = before, rss_mb(pid)
        res["jobs_after"] = httpx.get(f"{url}/health", timeout=30).json()["jobs"]
    finally:
        if srv is not None:
            srv.stop()
    goals = evaluate_goals(res, timeout)
    info["loadavg_end"] = list(os.getloadavg())
    result = {"name": args.name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": info,
              "settings": {"clients": args.clients, "duration_s": args.duration, "image": args.image.name,
                           "image_bytes": len(data), "server_args": server_args, "warmup": args.warmup,
                           "backoff_on_503": not args.no_backoff, "server": {k: health[k] for k in ("workers", "capacity")},
                           "model": {k: model[k] for k in ("id", "model_name", "backend", "flip_tta")}},
              "goals": goals, "results": res}
    print_table(res, goals)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
