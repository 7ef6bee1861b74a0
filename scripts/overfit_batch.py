"""Can a model fit one fixed batch? A one-minute optimisation check before a long CPU run.

A from-scratch transformer at too high a learning rate collapses to one answer for every input, and a run
shows it only as a flat validation curve after many epochs. Fitting 32 fixed random inputs to random ages
tells in a minute whether a (model, lr) pair can learn at all. Numbers are training loss (L1, years) on the
batch itself: a constant answer stays near the ages' mean absolute deviation (about 17 for ages 5-75).

    python scripts/overfit_batch.py mivolo_s_96 --lr 1e-3 3e-4 1e-4 --set post_layers=0
"""
from __future__ import annotations

import argparse
import time

import torch
import yaml

from agekit.models import create_model, get_model_cfg


def _kwargs(pairs: list[str]) -> dict:
    """KEY=VALUE pairs, each value read as YAML (so 0 is an int, 0.1 a float, p2+p3 a string)."""
    return {k: yaml.safe_load(v) for k, _, v in (p.partition("=") for p in pairs)}


def fit(model_name: str, lr: float, steps: int, batch: int, kwargs: dict, seed: int = 0) -> tuple[list[float], float]:
    """L1 loss on the fixed batch after every step, and the L1 of the best constant answer (the ages' median)."""
    cfg = get_model_cfg(model_name)
    g = torch.Generator().manual_seed(seed)
    size = cfg.input_size[-1]
    face = torch.randn(batch, 3, size, size, generator=g)
    age = torch.rand(batch, generator=g) * 70 + 5
    torch.manual_seed(seed)
    model = create_model(model_name, pretrained=False, age_head="regression", **kwargs)
    inputs = (face, torch.randn(batch, 3, size, size, generator=g), torch.ones(batch), torch.ones(batch)) \
        if cfg.task == "face_body" else (face,)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    losses = []
    for _ in range(steps):
        loss = (model(*inputs)["age"].reshape(-1) - age).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, (age - age.median()).abs().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-4, 1e-4])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--set", nargs="*", default=[], help="model kwargs, KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for lr in args.lr:
        t = time.perf_counter()
        losses, constant = fit(args.model, lr, args.steps, args.batch, _kwargs(args.set))
        quarters = [round(v, 2) for v in losses[max(args.steps // 4, 1) - 1::max(args.steps // 4, 1)]]
        print(f"{args.model} lr={lr:g} {' '.join(args.set)}: L1 by quarter {quarters}, constant answer {constant:.2f} "
              f"({time.perf_counter() - t:.0f} s)", flush=True)

if __name__ == "__main__":
    main()
