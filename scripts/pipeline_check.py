"""MAE through the full photo pipeline vs MAE on the ready-made crops (issue: alignment check).

    python scripts/pipeline_check.py [--model agekit/assets/mobileagenet_lite0_utkface.safetensors]
        [--root ../shared/data/UTKFace] [--n 300] [--out benchmarks/results/pipeline_check.json]

Takes n test-split chips of the shipped UTKFace split, pastes each into a 640 px synthetic photo
(random scale 0.6-1.6, angle +-20 deg, position), runs agekit.Predictor on the photos, and compares
with the same Predictor's estimate on the original chips.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from agekit import Predictor
from agekit.data.datasets import resolve_manifest
from agekit.evaluation.pipeline_check import run_pipeline_check


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "UTKFace"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--out", default="benchmarks/results/pipeline_check.json")
    a = ap.parse_args()
    df = resolve_manifest("utkface", a.root, None, "default")
    df = df[df["split"] == "test"].reset_index(drop=True)
    check, table = run_pipeline_check(Predictor(a.model, backend=a.backend), df, n=a.n)
    print(json.dumps(check.to_dict(), indent=2))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(check.to_dict(), indent=2))
    table.to_csv(out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
