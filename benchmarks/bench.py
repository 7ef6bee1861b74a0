#!/usr/bin/env python
"""CPU speed of agekit: per-face latency per backend, batch throughput, whole-photo pipeline, video per frame,
training step rate.

    python benchmarks/bench.py [--model M.safetensors] [--threads 2] [--quick] [--name NAME]
    python benchmarks/bench.py --exported m.int8.onnx m.tflite m.int8.tflite   # reuse exports (else made here)
    python benchmarks/bench.py --compare results/a.json results/b.json   # e.g. without / with tcmalloc

Backends are the runnable rows of the export format table (torch, onnx, onnx-int8, tflite, tflite-int8); a
row whose toolchain is missing, or an int8 row without calibration crops (UTKFace not found), is skipped
with a note. The int8 files are also sized (MB) in the JSON.

Prints a rich table and writes benchmarks/results/<name>.json with the machine description (cores,
library versions, threads, allocator, load average before and after: a busy machine inflates every
number, so read them next to the load). Targets are reported as pass/fail, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
TARGETS = {"per_face_onnx_ms": 10.0, "photo_640_ms": 50.0, "photo_640_default_ms": 12.0}  # on 2 cores


# -- measuring -----------------------------------------------------------------------------------
def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    """Wall time of ``fn`` in ms over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    ts = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        ts[i] = time.perf_counter() - t0
    ts *= 1e3
    return {"median_ms": float(np.median(ts)), "p90_ms": float(np.percentile(ts, 90)), "mean_ms": float(ts.mean()),
            "min_ms": float(ts.min()), "runs": runs}


def log(msg: str) -> None:
    """Progress on stderr: a full run takes minutes, more on a busy machine."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    cpu = platform.processor()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    allocator = "tcmalloc" if "tcmalloc" in maps else ("jemalloc" if "jemalloc" in maps else "system malloc")
    return {
        "hostname": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
        "cpu": cpu, "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "onnxruntime": ort.__version__, "numpy": np.__version__, "allocator": allocator,
        "ld_preload": os.environ.get("LD_PRELOAD", ""), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# -- the model under test --------------------------------------------------------------------------
def resolve_model(model: str | None, work: Path) -> tuple[Path, str]:
    """The model file and a note on its weights (speed does not depend on them, accuracy does)."""
    from agekit.inference.defaults import default_model_path

    if model:
        return Path(model), "given"
    p = default_model_path()
    if p.is_file():
        return p, "bundled"
    import torch

    from agekit.models import create_model, save_weights

    torch.manual_seed(0)
    path = save_weights(create_model("mobileagenet_lite0").eval(), work / "lite0_random.safetensors",
                        {"model_name": "mobileagenet_lite0", "model_kwargs": {}})
    return path, "random init (bundled model not present; timings are valid, predictions are not)"


def export_backends(model_path: Path, work: Path, given: list[str], skip: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """{backend: model file} for every runnable format (the weights file itself for torch), and {backend: why
    skipped}. Files in ``given`` are used for their format; the others are exported here (int8 calibrated on
    300 UTKFace training crops through the one crop path, as `agekit export` does)."""
    from agekit.export.formats import EXPORT_FORMATS, export_model, format_for_path, missing_requirements

    files: dict[str, Path] = {"torch": model_path}
    notes: dict[str, str] = {}
    for f in given:
        fmt = format_for_path(f)
        if fmt is None or fmt.runner is None:
            raise SystemExit(f"--exported {f}: not a model file agekit can run")
        files[fmt.name] = Path(f)
    calib = None
    for name, fmt in EXPORT_FORMATS.items():
        if name in files or fmt.runner is None or name in skip:
            continue
        if missing_requirements(fmt):
            notes[name] = f"needs pip install {' '.join(missing_requirements(fmt))}"
            continue
        options = {}
        if fmt.calibrated:
            if calib is None:
                calib = _calibration(model_path)
            if calib[0] is None:
                notes[name] = calib[1]
                continue
            options = {"calibration": calib[0], "calibration_source": calib[1]}
        log(f"exporting {name}")
        try:
            files[name] = export_model(model_path, name, work / f"{model_path.stem}{fmt.suffix}", **options).path
        except Exception as e:  # noqa: BLE001 - report and go on with the other backends
            notes[name] = f"export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return files, notes


def _calibration(model_path: Path) -> tuple[Any, str]:
    from agekit.config.roots import dataset_root
    from agekit.evaluation.parity import parity_inputs
    from agekit.runtime import load_runner

    root = dataset_root("utkface")
    if not root or not Path(root).is_dir():
        return None, "int8 needs calibration crops: UTKFace not found (or pass --exported FILE)"
    cfg = load_runner(model_path, "torch").cfg
    return parity_inputs("utkface", cfg, 300, split="train", cache_dir=HERE / ".cache", seed=1)


def bench_model(files: dict[str, Path], threads: int, runs: int, warmup: int, thr_iters: int) -> list[dict]:
    """Per-face latency (batch 1; batch 2 = one face with flip TTA, through ``Runner.predict``) and batch-32
    throughput, every backend in ``files``."""
    from agekit.runtime import load_runner

    rng = np.random.default_rng(0)
    rows = []
    for backend, path in files.items():
        run = load_runner(path, backend, threads=threads)
        cfg = run.cfg
        log(f"model latency and throughput: {backend}")
        x1 = rng.standard_normal((1, *cfg.input_size)).astype(np.float32)
        size_mb = path.stat().st_size / 1e6
        for batch, label, call in ((1, "per face", lambda: run(x1)),
                                   (2, "per face, flip TTA", lambda: run.predict(x1, tta_flip=True))):
            t = time_calls(call, runs, warmup)
            row = {"bench": label, "backend": backend, "batch": batch, **t, "file_mb": size_mb}
            if backend == "onnx" and batch == 1:
                row.update(target_ms=TARGETS["per_face_onnx_ms"], passed=t["median_ms"] <= TARGETS["per_face_onnx_ms"])
            rows.append(row)
        x = rng.standard_normal((32, *cfg.input_size)).astype(np.float32)
        t = time_calls(lambda: run(x), thr_iters, 2)
        rows.append({"bench": "throughput", "backend": backend, "batch": 32, **t,
                     "images_per_s": 32e3 / t["median_ms"]})
    return rows


def photos(work: Path) -> list[tuple[str, Path]]:
    """The bundled 512 px astronaut and a 640 px one-face photo (the astronaut upscaled to 640 px, saved as a
    quality-95 JPEG like a camera photo; until issue 10 it was a PNG, whose decode alone took ~7 ms)."""
    import cv2

    from agekit.data.imageio import load_rgb
    from agekit.inference.defaults import example_photo_path

    src = example_photo_path()
    if src.is_file():
        rgb = load_rgb(src)
    else:
        from skimage import data as skdata  # the same public-domain photo

        rgb = skdata.astronaut()
        src = work / "astronaut.png"
        cv2.imwrite(str(src), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    big = work / "astronaut_640.jpg"
    scale = 640 / max(rgb.shape[:2])
    up = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(big), cv2.cvtColor(up, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return [(f"photo {rgb.shape[1]}x{rgb.shape[0]}", src), (f"photo {up.shape[1]}x{up.shape[0]}", big)]


def bench_pipeline(model_path: Path, onnx_path: Path, threads: int, runs: int, warmup: int, work: Path) -> list[dict]:
    """Whole photo: decode -> detect -> align -> estimate (flip TTA), with agekit.Predictor: the default
    (what `agekit predict photo.jpg` runs: no backend named, so the cached, parity-checked ONNX export),
    ONNX Runtime on the exported file (also in person mode: + person detection, pairing, body crops), person
    mode's default (the bundled face+body model), and PyTorch (`--backend torch`)."""
    try:
        from agekit import Predictor
    except (ImportError, AttributeError) as e:
        print(f"[pipeline] skipped: agekit.Predictor not available yet ({e})")
        return []
    rows = []
    for label_backend, path, backend, persons in (("default", model_path, None, False), ("onnx", onnx_path, "onnx", False),
                                                  ("onnx", onnx_path, "onnx", True), ("default", None, None, True),
                                                  ("torch", model_path, "torch", False)):
        try:
            pred = Predictor(path, backend=backend, threads=threads, cache_dir=work / "user_cache", persons=persons)
        except Exception as e:  # noqa: BLE001 - report and go on with the other benchmarks
            print(f"[pipeline] {label_backend}: cannot build Predictor ({type(e).__name__}: {e})")
            continue
        if backend is None:  # person mode with no model named: the bundled face+body model, when shipped
            label_backend = f"default ({pred.backend_name})" + (f", {pred.cfg.name}" if path is None else "")
        import torch

        # as `agekit predict` does: with a non-torch backend torch only normalises crops, and its idle OpenMP
        # threads would compete with onnxruntime's
        torch.set_num_threads(threads if pred.backend_name == "torch" else 1)
        for label, photo in photos(work):
            label = f"{label} persons" if persons else label
            log(f"pipeline: {label}, {label_backend}")
            res = pred.predict(str(photo))[0]
            stages: dict[str, list[float]] = {}

            def once() -> None:
                r = pred.predict(str(photo))[0]
                for k, v in r.timings.items():
                    stages.setdefault(k, []).append(v * 1e3)

            t = time_calls(once, runs, warmup)
            row = {"bench": label, "backend": label_backend, "batch": 1, **t,
                   **({"persons": len(res.persons)} if persons else {"faces": len(res.faces)}),
                   "stage_median_ms": {k: float(np.median(v[warmup:])) for k, v in stages.items()}}
            if "640" in label and not persons:
                key = "photo_640_default_ms" if backend is None else "photo_640_ms"
                row.update(target_ms=TARGETS[key], passed=t["median_ms"] <= TARGETS[key])
            rows.append(row)
    return rows


def face_chip() -> np.ndarray:
    """The bundled astronaut's face with a UTKFace-chip-like margin, 200x200 (for synthetic video scenes)."""
    import cv2

    from agekit.data.imageio import load_rgb
    from agekit.inference.defaults import example_photo_path

    rgb = load_rgb(example_photo_path())
    crop = rgb[27:227, 125:325]  # around the face box (178,57)-(273,177) of the 512 px photo
    return cv2.resize(crop, (200, 200), interpolation=cv2.INTER_AREA)


def bench_video(model_path: Path, onnx_path: Path, threads: int, runs: int, work: Path, n_frames: int = 50) -> list[dict]:
    """``Predictor.predict_video`` on 2 s 640x360 H.264 clips (25 fps) with one face walking across, or two that
    cross paths: decode, detect, align, estimate (flip TTA), track, aggregate. Milliseconds per video frame; with
    ``stride`` 5 the time per *decoded* frame (what a user waits per second of video / 25)."""
    from agekit import Predictor
    from agekit.evaluation.pipeline_check import crossing_faces_frames
    from agekit.inference.draw import VideoWriter

    chip = face_chip()
    clips = {}
    for faces in (1, 2):
        path = work / f"walk_{faces}.mp4"
        with VideoWriter(path, 25) as w:
            for f in crossing_faces_frames([chip, chip[:, ::-1]][:faces], n_frames, offset=0.4):
                w.write(f)
        clips[faces] = path
    rows = []
    for backend, path in (("onnx", onnx_path), ("torch", model_path)):
        pred = Predictor(path, backend=backend, threads=threads)
        for faces, stride, draw in ((1, 1, False), (2, 1, False), (2, 5, False), (2, 1, True)):
            log(f"video: {faces} face(s), stride {stride}{', drawing' if draw else ''}, {backend}")
            label = f"video 640x360, {faces} face{'s' if faces > 1 else ''}, stride {stride}" + (", --draw" if draw else "")
            results, cpu = [], []

            def once() -> None:
                c0 = time.process_time()
                results.append(pred.predict_video(clips[faces], stride=stride, draw=work / "drawn" if draw else None))
                cpu.append((time.process_time() - c0) * 1e3 / n_frames)

            t = time_calls(once, runs, 1)
            res = results[-1]
            per = {k: v / n_frames for k, v in t.items() if k.endswith("_ms")}  # per decoded frame
            # CPU time of all threads per frame: on a busy machine wall time mostly measures waiting for a core
            rows.append({"bench": label, "backend": backend, "batch": 1, **per, "cpu_ms": float(np.median(cpu[1:])),
                         "runs": runs, "frames": n_frames,
                         "frames_processed": res.frames_processed, "tracks": len(res.tracks),
                         "images_per_s": 1e3 / per["median_ms"],
                         "stage_ms_per_processed_frame": {k: round(v * 1e3, 2) for k, v in res.timings.items()}})
    return rows


def bench_training(threads: int, steps: int, warmup: int) -> list[dict]:
    """Optimizer steps of the training LightningModule (forward + backward + AdamW) at batch 64, channels_last."""
    import torch

    from agekit.training.module import TaskModule

    rows = []
    for frozen in (0, 2):
        log(f"training steps, frozen early blocks={frozen}")
        config = {"model": {"name": "mobileagenet_lite0", "pretrained": False},
                  "finetune": {"freeze_early_blocks": frozen}, "trainer": {"channels_last": True}}
        torch.manual_seed(0)
        module = TaskModule(config).to(memory_format=torch.channels_last).train()
        opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
        size = module.model_cfg.input_size[-1]
        x = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8)
        age, gender, weight = torch.rand(64) * 90, torch.randint(0, 2, (64,)), torch.ones(64)

        def step() -> None:
            loss = module.task.loss(module(x), (x, age, gender, weight), module.cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = time_calls(step, steps, warmup)
        rows.append({"bench": f"train step, frozen early blocks={frozen}", "backend": "torch", "batch": 64, **t,
                     "images_per_s": 64e3 / t["median_ms"]})
    return rows


# -- output --------------------------------------------------------------------------------------
def print_table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    t = Table("benchmark", "backend", "batch", "median ms", "p90 ms", "images/s", "target", "pass", title=title)
    for r in rows:
        ips = r.get("images_per_s", 1e3 * r["batch"] / r["median_ms"] if "per face" in r["bench"] else None)
        ok = r.get("passed")
        count = f" ({r['faces']} face)" if "faces" in r else (f" ({r['persons']} person)" if "persons" in r else "")
        t.add_row(r["bench"] + count + (" per frame" if "frames" in r else ""), r["backend"], str(r["batch"]),
                  f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{ips:.0f}" if ips else "",
                  f"<= {r['target_ms']:g} ms" if "target_ms" in r else "",
                  "" if ok is None else ("[green]pass[/]" if ok else "[red]FAIL[/]"))
    _console().print(t)


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)  # logs/pipes: do not wrap to 80 columns


def compare(a_path: str, b_path: str) -> None:
    """Side by side medians of two result files (e.g. system malloc vs tcmalloc)."""
    from rich.table import Table

    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    key = lambda r: (r["bench"], r["backend"], r["batch"])  # noqa: E731
    bm = {key(r): r for r in b["results"]}
    la, lb = a["machine"]["allocator"], b["machine"]["allocator"]
    t = Table("benchmark", "backend", "batch", f"A ms ({la})", f"B ms ({lb})", "speed-up A/B",
              title=f"A={Path(a_path).name}  B={Path(b_path).name}")
    for r in a["results"]:
        if key(r) in bm:
            s = bm[key(r)]
            t.add_row(r["bench"], r["backend"], str(r["batch"]), f"{r['median_ms']:.2f}", f"{s['median_ms']:.2f}",
                      f"{r['median_ms'] / s['median_ms']:.2f}x")
    _console().print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="agekit .safetensors model [bundled, else an untrained mobileagenet_lite0]")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for torch and onnxruntime [2]")
    ap.add_argument("--quick", action="store_true", help="fewer runs (smoke test; noisy numbers)")
    ap.add_argument("--name", help="result name [<model>-t<threads>[-tcmalloc]]")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["model", "pipeline", "video", "train", "onnx-int8", "tflite", "tflite-int8"],
                    help="benchmarks (or backends) to skip")
    ap.add_argument("--exported", nargs="*", default=[], metavar="FILE",
                    help="exported model files to time instead of exporting here (by suffix: .onnx, .int8.onnx, ...)")
    ap.add_argument("--compare", nargs=2, metavar="JSON", help="compare two result files and exit")
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0

    os.environ.setdefault("AGEKIT_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    runs, warmup = (30, 5) if args.quick else (200, 20)
    work = Path(tempfile.mkdtemp(prefix="agekit_bench_"))
    info = machine_info(args.threads)
    model_path, weights = resolve_model(args.model, work)
    files, notes = export_backends(model_path, work, args.exported, args.skip)
    for name, why in notes.items():
        print(f"[model] {name} skipped: {why}")
    onnx_path = files["onnx"]
    rows: list[dict] = []
    t0 = time.perf_counter()
    if "model" not in args.skip:
        rows += bench_model(files, args.threads, runs, warmup, 5 if args.quick else 30)
    if "pipeline" not in args.skip:
        rows += bench_pipeline(model_path, onnx_path, args.threads, max(10, runs // 4), 3 if args.quick else 10, work)
    if "video" not in args.skip:
        rows += bench_video(model_path, onnx_path, args.threads, 2 if args.quick else 5, work)
    if "train" not in args.skip:
        rows += bench_training(args.threads, 2 if args.quick else 6, 1 if args.quick else 2)
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    name = args.name or f"{model_path.stem}-t{args.threads}" + ("-tcmalloc" if info["allocator"] == "tcmalloc" else "")
    result = {"name": name, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model": {"path": str(model_path), "weights": weights}, "machine": info,
              "settings": {"threads": args.threads, "quick": args.quick, "runs": runs, "warmup": warmup},
              "targets": TARGETS, "seconds": time.perf_counter() - t0, "results": rows,
              "files": {k: {"path": str(v), "mb": v.stat().st_size / 1e6} for k, v in files.items()},
              "skipped_backends": notes}
    out = Path(args.out_dir) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    load = info["loadavg_start"][0] if info["loadavg_start"] else float("nan")
    print_table(rows, f"agekit {name}: {info['threads']} threads, {info['allocator']}, load {load:.1f} "
                      f"on {info['usable_cores']} cores")
    if load > 0.5 * (info["usable_cores"] or 1):
        print(f"note: the machine was busy (1-min load {load:.1f}); numbers are inflated")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
