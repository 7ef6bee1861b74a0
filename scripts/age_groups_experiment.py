"""Does learning from age groups help? A controlled check on real faces whose exact ages are known.

    python scripts/age_groups_experiment.py [--mode probe|finetune] [--root ../shared/data/UTKFace]
        [--n-train 3000] [--exact-frac 0.1] [--seeds 3] [--out docs/results/age_groups]

From the shipped UTKFace split, ``n_train`` training faces are drawn (seed 0); only ``exact_frac`` of them keep
their exact age, the rest keep only their PETA age group (0-15, 16-30, 31-45, 46-60, 61+). The runs differ only in
what they do with the group-only faces:

- ``exact_only``: drop them (train on the exact ages alone, as many optimizer steps as the others);
- ``midpoint``: pretend the group's midpoint is the exact age (61+ -> 70);
- ``censored``: keep them as intervals with the interval-censored loss (-log P(age in group));
- ``all_exact``: the reference, every training face with its true age.

Each is scored on the same test faces: MAE against the exact ages, and age-group accuracy against their groups.

``--mode probe`` (default, minutes on 2 CPU cores): the faces go through the one crop path at 128 px and the
ImageNet EfficientNet-Lite0 backbone once (frozen features); each run trains only agekit's age head on them
(``AgeGenderHead``, one layer, DLDL distribution head and, with ``--heads dldl,gaussian``, the Gaussian head),
``--seeds`` times. ``--mode finetune``: each run fine-tunes the whole mobileagenet_lite0 with ``agekit train``
(DLDL head, ``--epochs``; an hour or more on a busy CPU, minutes on a GPU). Writes ``<out>.md`` and ``<out>.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from agekit.data.datasets import resolve_manifest
from agekit.data.manifest import write_manifest
from agekit.evaluation.metrics import estimate, group_metrics

GROUPS = [(0, 15), (16, 30), (31, 45), (46, 60), (61, 130)]
MIDPOINT = {(0, 15): 8.0, (16, 30): 23.0, (31, 45): 38.0, (46, 60): 53.0, (61, 130): 70.0}
RUNS = ("exact_only", "midpoint", "censored", "all_exact")


def to_group(age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PETA group of whole-year ages (UTKFace ages are whole years)."""
    lo, hi = np.full(len(age), np.nan), np.full(len(age), np.nan)
    for a, b in GROUPS:
        m = (age >= a) & (age <= b)
        lo[m], hi[m] = a, b
    return lo, hi


def labels(run: str, age: np.ndarray, lo: np.ndarray, hi: np.ndarray, group: np.ndarray):
    """(keep rows, target age (NaN = group row), lo, hi) of the training rows for one run."""
    target = age.copy()
    if run == "all_exact":
        return np.ones(len(age), bool), target, lo, hi
    if run == "exact_only":
        return ~group, target, lo, hi
    if run == "midpoint":
        target[group] = [MIDPOINT[(a, b)] for a, b in zip(lo[group], hi[group])]
        return np.ones(len(age), bool), target, lo, hi
    target[group] = np.nan
    return np.ones(len(age), bool), target, lo, hi


def sample_table(root: str, n: dict[str, int], exact_frac: float) -> tuple[pd.DataFrame, np.ndarray]:
    """The drawn faces (shipped split, seed 0) and which training rows keep only their group."""
    df = resolve_manifest("utkface", root, None, "default")
    rng = np.random.default_rng(0)
    parts = []
    for split, k in n.items():
        idx = np.flatnonzero((df["split"] == split).to_numpy())
        parts.append(df.iloc[np.sort(rng.choice(idx, min(k, len(idx)), replace=False))])
    base = pd.concat(parts, ignore_index=True)
    base["path"] = [str(Path(root).resolve() / Path(p).name) for p in base["path"]]
    base.attrs["root"] = "/"
    group = (base["split"] == "train").to_numpy() & (rng.random(len(base)) >= exact_frac)
    return base, group


# -- probe: frozen ImageNet features, agekit's age head trained on them ------------------------------------------
def features(base: pd.DataFrame, cache_dir: Path) -> np.ndarray:
    """Pooled EfficientNet-Lite0 (ImageNet) features of every face, through the one crop path at 128 px."""
    from agekit.data.cache import build_crop_cache
    from agekit.data.transforms import normalize
    from agekit.models import create_model, get_model_cfg

    path = cache_dir / "features.npy"
    if path.is_file():
        return np.load(path)
    cfg = get_model_cfg("mobileagenet_lite0")
    crops, ok, errors = build_crop_cache(base, cfg.input_size[-1], cache_dir)
    if not ok.all():
        raise RuntimeError(f"unreadable faces: {errors[:3]}")
    model = create_model("mobileagenet_lite0", pretrained=True).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(base), 64):
            x = torch.from_numpy(np.array(crops[s:s + 64])).permute(0, 3, 1, 2)
            out.append(model.backbone(normalize(x, cfg)).numpy())
    feats = np.concatenate(out).astype(np.float32)
    np.save(path, feats)
    return feats


def train_head(head_kind: str, x: np.ndarray, target: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               x_val: np.ndarray, y_val: np.ndarray, seed: int, steps: int, batch: int = 128):
    """agekit's AgeGenderHead (one layer) on frozen features with the task's loss; best val MAE checkpoint."""
    from agekit.models.heads import AgeGenderHead
    from agekit.tasks.age import age_loss_from_outputs

    torch.manual_seed(seed)
    head = AgeGenderHead(x.shape[1], num_layers=1, dropout=0.1, age_range=(0, 100), gender=False,
                         age_head=head_kind)
    loss_kind = "dldl" if head_kind == "dldl" else "gaussian_nll"
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt, lt, ht = (torch.from_numpy(np.asarray(a, np.float32)) for a in (x, target, lo, hi))
    xv = torch.from_numpy(x_val)
    g = torch.Generator().manual_seed(seed)
    best, best_state = float("inf"), None
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(xt), (batch,), generator=g)
        head.train()
        loss = age_loss_from_outputs(loss_kind, head(xt[idx]), yt[idx], None, None, lt[idx], ht[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            head.eval()
            with torch.no_grad():
                mae = float(np.abs(head(xv)["age"].numpy() - y_val).mean())
            if mae < best:
                best, best_state = mae, {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    head.eval()
    return head


def run_probe(a, base: pd.DataFrame, group: np.ndarray, work: Path) -> list[dict]:
    feats = features(base, work)
    age = base["age"].to_numpy(np.float64)
    lo, hi = to_group(age)
    tr, va, te = ((base["split"] == s).to_numpy() for s in ("train", "val", "test"))
    rows = []
    for head_kind in a.heads.split(","):
        for run in RUNS:
            keep, target, tlo, thi = labels(run, age[tr], lo[tr], hi[tr], group[tr])
            per_seed = []
            for seed in range(a.seeds):
                head = train_head(head_kind, feats[tr][keep], target[keep], tlo[keep], thi[keep], feats[va], age[va],
                                  seed, a.steps)
                with torch.no_grad():
                    pred = head(torch.from_numpy(feats[te]))["age"].numpy().astype(np.float64)
                gm = group_metrics(pred, lo[te], hi[te], np.array(GROUPS, float), n_boot=1000)
                per_seed.append({"mae": estimate(np.abs(pred - age[te])).to_dict(), "bias": float((pred - age[te]).mean()),
                                 "group_accuracy": gm["accuracy"], "balanced_accuracy": gm["balanced_accuracy"],
                                 "range_mae": gm["range_mae"]["value"], "majority_rate": gm["majority"]["rate"]})
            rows.append(_row(run, head_kind, keep, group[tr], per_seed))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_seed"}), flush=True)
    return rows


def _row(run: str, head: str, keep: np.ndarray, group: np.ndarray, per_seed: list[dict]) -> dict:
    def ms(key: str, sub: str | None = None) -> tuple[float, float]:
        v = np.array([s[key][sub] if sub else s[key] for s in per_seed], dtype=np.float64)
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    exact = keep & (~group if run != "all_exact" else True)  # faces trained on with their true age
    n_exact = int(exact.sum())
    return {"run": run, "head": head, "train_exact": n_exact, "train_groups": int(keep.sum()) - n_exact,
            "seeds": len(per_seed), "test_mae": ms("mae", "value"), "bias": ms("bias"),
            "group_accuracy": ms("group_accuracy", "value"), "balanced_accuracy": ms("balanced_accuracy"),
            "range_mae": ms("range_mae"), "majority_rate": per_seed[0]["majority_rate"],
            "mae_ci_seed0": [per_seed[0]["mae"]["ci_low"], per_seed[0]["mae"]["ci_high"]],
            "per_seed": per_seed}


# -- finetune: the whole model with `agekit train` -----------------------------------------------------------------
def run_finetune(a, base: pd.DataFrame, group: np.ndarray, work: Path) -> list[dict]:
    from agekit.config.train import load_config
    from agekit.evaluation.evaluate import evaluate
    from agekit.training.runner import train

    age = base["age"].to_numpy(np.float64)
    lo, hi = to_group(age)
    write_manifest(base, work / "test_exact.csv")
    write_manifest(base.assign(age=np.nan, age_lo=lo, age_hi=hi), work / "test_groups.csv")
    tr = (base["split"] == "train").to_numpy()
    rows = []
    for run in RUNS:
        keep, target, tlo, thi = labels(run, age[tr], lo[tr], hi[tr], group[tr])
        train_part = base[tr].assign(age=target, age_lo=np.where(np.isnan(target), tlo, np.nan),
                                     age_hi=np.where(np.isnan(target), thi, np.nan))[keep]
        repeat = int(round(tr.sum() / max(keep.sum(), 1)))  # exact_only: as many draws per epoch as the others
        table = pd.concat([base[~tr]] + [train_part] * repeat, ignore_index=True)
        write_manifest(table, work / f"{run}.csv")
        cfg = load_config(None, [
            f"data.manifest={work / f'{run}.csv'}", f"data.cache_dir={work / 'cache'}", "data.batch_size=64",
            "model.name=mobileagenet_lite0", "model.pretrained=true", "model.kwargs.age_head=dldl",
            "model.kwargs.drop_rate=0.2", "loss.age=dldl", "loss.gender_weight=0.2", "optim.lr=0.002",
            "optim.backbone_lr_ratio=0.3", "optim.schedule=cosine", "optim.warmup_epochs=0.5",
            "finetune.head_epochs=0", "finetune.freeze_early_blocks=2", f"trainer.max_epochs={a.epochs}",
            f"trainer.out_dir={work / run}", "trainer.progress=none", "trainer.resume=false", "eval.tta_flip=false"])
        t0 = time.perf_counter()
        model = train(cfg)["model_file"]
        ex = evaluate(model, work / "test_exact.csv", "test", cache_dir=work / "cache", tta_flip=False)
        gr = evaluate(model, work / "test_groups.csv", "test", cache_dir=work / "cache", tta_flip=False)
        m, g = ex.results["metrics"], gr.results["age_groups"]
        per_seed = [{"mae": m["mae"], "bias": m["bias"]["value"], "group_accuracy": g["accuracy"],
                     "balanced_accuracy": g["balanced_accuracy"], "range_mae": g["range_mae"]["value"],
                     "majority_rate": g["majority"]["rate"], "seconds": time.perf_counter() - t0}]
        rows.append(_row(run, "dldl (fine-tuned)", keep, group[tr], per_seed))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_seed"}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("probe", "finetune"), default="probe")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "UTKFace"))
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--exact-frac", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3, help="probe: head trainings per run")
    ap.add_argument("--steps", type=int, default=3000, help="probe: optimizer steps per head training")
    ap.add_argument("--heads", default="dldl,gaussian", help="probe: age heads to try")
    ap.add_argument("--epochs", type=int, default=3, help="finetune: epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: no spin-waiting on a busy machine)")
    ap.add_argument("--work", default="runs/age_groups")
    ap.add_argument("--out", default="docs/results/age_groups")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(a.work) / a.mode
    work.mkdir(parents=True, exist_ok=True)
    base, group = sample_table(a.root, {"train": a.n_train, "val": a.n_val, "test": a.n_test}, a.exact_frac)
    t0 = time.perf_counter()
    rows = run_probe(a, base, group, work) if a.mode == "probe" else run_finetune(a, base, group, work)
    secs = time.perf_counter() - t0
    n = {s: int((base["split"] == s).sum()) for s in ("train", "val", "test")}
    settings = {"mode": a.mode, **{f"n_{k}": v for k, v in n.items()}, "exact_frac": a.exact_frac,
                "exact_train": int((~group[(base["split"] == "train").to_numpy()]).sum()), "seeds": a.seeds,
                "steps": a.steps, "epochs": a.epochs, "groups": GROUPS, "seconds": round(secs, 1),
                "midpoints": {f"{k[0]}-{k[1]}": v for k, v in MIDPOINT.items()}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    text = markdown(settings, rows)
    out.with_suffix(".md").write_text(text)
    print(text)


def markdown(s: dict, rows: list[dict]) -> str:
    how = ("frozen ImageNet EfficientNet-Lite0 features (128 px, agekit's crop path), agekit's one-layer age head "
           f"trained {s['steps']} steps per seed, best val MAE kept" if s["mode"] == "probe" else
           f"mobileagenet_lite0 fine-tuned with `agekit train`, DLDL head, {s['epochs']} epochs")
    lines = [f"# Learning from age groups: UTKFace with {100 * s['exact_frac']:g}% exact ages", "",
             f"`python scripts/age_groups_experiment.py --mode {s['mode']}` ({s['seconds'] / 60:.0f} min on 2 busy "
             f"CPU cores). {s['n_train']} training faces of the shipped UTKFace split, of which {s['exact_train']} keep "
             "their exact age and the rest only their PETA group (0-15, 16-30, 31-45, 46-60, 61+); "
             f"{s['n_val']} val faces (exact ages, checkpoint selection), {s['n_test']} test faces scored against "
             f"their exact ages (MAE) and their groups (accuracy). Model: {how}. Mean ± std over {s['seeds']} seeds.",
             "", "| head | run | training faces: exact age / group only | test MAE | bias | group accuracy | balanced acc. | "
             "MAE to group range |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = lambda t, pct=False: (f"{100 * t[0]:.1f} ± {100 * t[1]:.1f}%" if pct else f"{t[0]:.2f} ± {t[1]:.2f}")  # noqa: E731
        lines.append(f"| {r['head']} | {r['run']} | {r['train_exact']} / {r['train_groups']} | {f(r['test_mae'])} | "
                     f"{r['bias'][0]:+.2f} | {f(r['group_accuracy'], True)} | {f(r['balanced_accuracy'], True)} | "
                     f"{f(r['range_mae'])} |")
    lines += ["", f"Majority-class rate on these test faces: {100 * rows[0]['majority_rate']:.1f}%. `all_exact` is the "
              "reference with every training age known; `midpoint` treats a group's midpoint (61+: 70) as the age.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
