"""Per-face ONNX Runtime latency (batch 1) of the MobileAgeNet backbones at their registered input size.

Latency does not depend on trained weights, so untrained models are exported: this is the cost column of
the backbone comparison in docs/results/gpu_grid_issue8.md.

    python benchmarks/backbone_latency.py [--threads 2] [--out benchmarks/results/backbone_latency.json]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from agekit.models import create_model, get_model_cfg

MODELS = ("mobileagenet_lite0", "mobileagenet_lite1", "mobileagenet_lite2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", default="benchmarks/results/backbone_latency.json")
    a = ap.parse_args()
    res: dict = {"threads": a.threads, "load_avg_before": os.getloadavg()[0], "models": {}}
    print(f"{'model':22} {'input':>6} {'params':>8} {'median ms':>10} {'p90 ms':>8}")
    with tempfile.TemporaryDirectory() as d:
        for name in MODELS:
            size = get_model_cfg(name).input_size[-1]
            m = create_model(name, pretrained=False).eval()
            x = torch.randn(1, 3, size, size)
            path = Path(d) / f"{name}.onnx"
            torch.onnx.export(m, (x,), str(path), input_names=["x"], dynamo=False)
            so = ort.SessionOptions()
            so.intra_op_num_threads = a.threads
            s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            xi = x.numpy()
            for _ in range(20):
                s.run(None, {"x": xi})
            t = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                s.run(None, {"x": xi})
                t.append(time.perf_counter() - t0)
            row = {"input": size, "params_M": round(sum(p.numel() for p in m.parameters()) / 1e6, 2),
                   "median_ms": round(1000 * float(np.median(t)), 2), "p90_ms": round(1000 * float(np.percentile(t, 90)), 2)}
            res["models"][name] = row
            print(f"{name:22} {size:>6} {row['params_M']:>7}M {row['median_ms']:>10} {row['p90_ms']:>8}")
    res["load_avg_after"] = os.getloadavg()[0]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
