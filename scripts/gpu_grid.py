"""Run a grid of `agekit train` runs side by side on one GPU box, within a wall-clock deadline.

How the issue-8 GPU runs were made (docs/results/gpu_grid_issue8.md). Data arrives packed: here
`agekit data pack configs/mobileagenet_lite0_utk_aaf.yaml --out gpu/pack`; there `agekit data unpack
gpu/pack/shards --config gpu/pack/train.yaml`. Every run is a plain `agekit train` of that config on the
shipped manifests (gpu/pack/manifests) plus its
cell's overrides, so each one can be re-run on a CPU unchanged. What ran (an H200, 8 processes):

    python scripts/gpu_grid.py run --epochs 5 --procs 8 --deadline 180 --run-estimate 110 --out OUT

Lesson: processes time-slice one GPU rather than share it (together ~4,200 images/s for Lite0 at
128 px, batch 64), so on a short lease run fewer cells with larger batches.

Selection (validation only): the distribution-head cell with the lowest mean val MAE over its seeds,
then that cell's seed with the lowest val MAE; its model file is copied to OUT/best.safetensors. A run
still going at the deadline keeps its best checkpoint so far (`salvage`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BASE = "configs/mobileagenet_lite0_utk_aaf.yaml"  # the run used gpu/base.yaml, an include of exactly this
SOURCES = ("data.sources=[{manifest: gpu/pack/manifests/utkface.csv, weight: 1.0}, "
           "{manifest: gpu/pack/manifests/aaf.csv, weight: 1.0}]")
COMMON = ["data.degrade_p=0.4", "loss.gender_weight=0.5", "trainer.progress=none", "data.num_workers=2",
          "trainer.log_every_n_steps=100"]
CELLS: dict[str, list[str]] = {
    "l1": ["loss.age=l1"],
    "adaptive": ["loss.age=adaptive", "loss.sigma=2.0"],
    "weighted_mse": ["loss.age=weighted_mse"],
    "dldl": ["model.kwargs.age_head=dldl", "loss.age=dldl", "loss.sigma=2.0"],
    "mean_variance": ["model.kwargs.age_head=mean_variance", "loss.age=mean_variance"],
    "gaussian_nll": ["model.kwargs.age_head=gaussian", "loss.age=gaussian_nll"],
    "lite1_l1": ["model.name=mobileagenet_lite1", "model.backbone_weights=gpu/c3/lite1_imagenet_fp16.safetensors",
                 "loss.age=l1"],
    "lite2_l1": ["model.name=mobileagenet_lite2", "model.backbone_weights=gpu/c3/lite2_imagenet_fp16.safetensors",
                 "loss.age=l1"],
}
DIST_CELLS = ("dldl", "mean_variance", "gaussian_nll")
SEEDED = ("dldl", "gaussian_nll", "mean_variance", "l1", "adaptive", "weighted_mse")


def plan(seeds: int) -> list[tuple[str, int]]:
    """Seed 0 of every cell first, so a deadline still leaves one run per cell."""
    runs = [(c, 0) for c in CELLS]
    runs += [(c, s) for s in range(1, seeds) for c in SEEDED]
    return runs


def command(cell: str, seed: int, epochs: int, out_root: Path) -> list[str]:
    return [sys.executable, "-m", "agekit.cli.main", "train", BASE, SOURCES, *COMMON, *CELLS[cell],
            f"trainer.seed={seed}", f"trainer.max_epochs={epochs}", f"trainer.out_dir={out_root / cell / f's{seed}'}"]


def val_history(run_dir: Path) -> list[dict]:
    rows = []
    for f in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with f.open() as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("val/mae")]
    return rows


def salvage(rd: Path, cell: str, seed: int, wall: float) -> dict:
    """A run stopped at the deadline: export its best checkpoint so far (chosen by val MAE, as Lightning did)."""
    from agekit.training.runner import export_checkpoint

    hist = val_history(rd)
    best = sorted(rd.glob("checkpoints/best-*.ckpt"))
    rec = {"cell": cell, "seed": seed, "status": "stopped at deadline", "wall_s": round(wall, 1), "epochs": len(hist),
           "val_history": hist}
    if best and hist:
        val = min(float(h["val/mae"]) for h in hist)
        rec.update(best_val_mae=val, model_file=str(export_checkpoint(best[-1], rd / "model.safetensors",
                                                                         {"val_mae": val, "stopped_early": True})))
    return rec


def run(args: argparse.Namespace) -> None:
    out_root = Path("runs/gpu")
    out_root.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    queue, live, done = plan(args.seeds), {}, []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    while queue or live:
        now = time.time() - t0
        if now > args.deadline:
            for (cell, seed), (p, t, log) in live.items():
                p.kill()
                p.wait()
                done.append(salvage(out_root / cell / f"s{seed}", cell, seed, now - t))
            live = {}
            break
        while queue and len(live) < args.procs and now + args.run_estimate < args.deadline:
            cell, seed = queue.pop(0)
            log = open(out_root.parent / f"gpu_{cell}_s{seed}.log", "w")
            p = subprocess.Popen(command(cell, seed, args.epochs, out_root), stdout=log, stderr=subprocess.STDOUT, env=env)
            live[(cell, seed)] = (p, time.time(), log)
        for key, (p, t, log) in list(live.items()):
            if p.poll() is not None:
                log.close()
                cell, seed = key
                rd = out_root / cell / f"s{seed}"
                res = json.loads((rd / "results.json").read_text()) if (rd / "results.json").is_file() else {}
                hist = val_history(rd)
                done.append({"cell": cell, "seed": seed, "status": "ok" if p.returncode == 0 else f"rc {p.returncode}",
                             "wall_s": round(time.time() - t, 1), "best_val_mae": res.get("best_val_mae"),
                             "epochs": len(hist), "val_history": hist, "model_file": res.get("model_file")})
                print(f"[{time.time() - t0:6.0f}s] {cell} s{seed}: {done[-1]['status']} val MAE {res.get('best_val_mae')}"
                      f" in {done[-1]['wall_s']}s", flush=True)
                del live[key]
        if not queue and not live:
            break
        time.sleep(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"epochs": args.epochs, "procs": args.procs, "wall_s": round(time.time() - t0, 1), "runs": done}
    ok = [d for d in done if d.get("best_val_mae") is not None]
    by_cell: dict[str, list[dict]] = {}
    for d in ok:
        by_cell.setdefault(d["cell"], []).append(d)
    means = {c: sum(d["best_val_mae"] for d in v) / len(v) for c, v in by_cell.items()}
    summary["cell_mean_val_mae"] = means
    dist = {c: m for c, m in means.items() if c in DIST_CELLS}
    if dist:
        cell = min(dist, key=dist.get)
        best = min(by_cell[cell], key=lambda d: d["best_val_mae"])
        summary["chosen"] = {"cell": cell, "seed": best["seed"], "val_mae": best["best_val_mae"],
                             "rule": "distribution-head cell with the lowest mean val MAE, then its best-val seed"}
        shutil.copy(best["model_file"], out / "best.safetensors")
    (out / "grid.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


def probe(args: argparse.Namespace) -> None:
    """Synthetic training steps (the real TaskModule: augment + degrade + bf16 forward/backward) per second."""
    if args.worker:
        import torch

        from agekit.config.train import load_config
        from agekit.training.module import TaskModule

        cfg = load_config(BASE, [SOURCES, *COMMON, *CELLS["dldl"], "model.pretrained=false"])
        m = TaskModule(cfg.model_dump()).cuda().to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        x = torch.randint(0, 255, (64, 3, 128, 128), dtype=torch.uint8, device="cuda")
        batch = (x, torch.rand(64, device="cuda") * 80, torch.randint(0, 2, (64,), device="cuda"), torch.ones(64, device="cuda"))
        n, t = 0, None
        while True:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                b = m.augment_batch(batch)
                loss = m.task.loss(m(b[0]), b, m.cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
            if n == 10 and t is None:
                torch.cuda.synchronize()
                t, n = time.time(), 0
            if t is not None and time.time() - t > args.seconds:
                torch.cuda.synchronize()
                print(json.dumps({"steps_per_s": n / (time.time() - t), "img_per_s": 64 * n / (time.time() - t)}), flush=True)
                return
    for k in args.procs:
        ps = [subprocess.Popen([sys.executable, __file__, "probe", "--worker", "--seconds", str(args.seconds)],
                               stdout=subprocess.PIPE, text=True) for _ in range(k)]
        res = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in ps]
        print(f"{k} procs: {sum(r['img_per_s'] for r in res):.0f} img/s total, "
              f"{res[0]['img_per_s']:.0f} img/s per proc", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--epochs", type=int, default=15)
    r.add_argument("--procs", type=int, default=10)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--deadline", type=float, default=480)
    r.add_argument("--run-estimate", type=float, default=120, help="do not start a run later than deadline - this")
    r.add_argument("--out", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 8])
    p.add_argument("--seconds", type=float, default=12)
    p.add_argument("--worker", action="store_true")
    a = ap.parse_args()
    {"run": run, "probe": probe}[a.cmd](a)


if __name__ == "__main__":
    main()
