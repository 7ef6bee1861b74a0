"""Copy a trained (and calibrated) agekit model into agekit/assets for shipping, optionally storing its
floating-point tensors as float16 to halve the file (they load back into the float32 model unchanged in
shape; the copy records this in its metadata, ``storage``, next to the training provenance it keeps).

    python scripts/ship_model.py runs/x/model_calibrated.safetensors agekit/assets/NAME.safetensors --fp16

Parity of the shipped file with its source is printed (max |age difference| on random inputs), so the
precision change is measured, not assumed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agekit.models.weights import read_metadata  # noqa: E402
from agekit.runtime import load_runner  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--fp16", action="store_true", help="store floating tensors as float16")
    ap.add_argument("--selection", default=None, help="how this file was chosen (recorded in its metadata)")
    args = ap.parse_args()
    sd = load_file(str(args.src))
    meta = read_metadata(args.src)
    if args.fp16:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta["storage"] = {"dtype": "float16" if args.fp16 else "as trained",
                       "source_file": str(args.src), "source_sha256": hashlib.sha256(args.src.read_bytes()).hexdigest()}
    if args.selection:
        meta["selection"] = args.selection
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(args.dst), metadata={k: json.dumps(v) for k, v in meta.items()})
    a, b = load_runner(args.src, "torch"), load_runner(args.dst, "torch")
    gen = torch.Generator().manual_seed(0)
    x = a.model.example_inputs(8, generator=gen) if hasattr(a.model, "example_inputs") else \
        (torch.randn(8, *a.cfg.input_size, generator=gen),)
    with torch.inference_mode():
        da = a.model(*x)["age"]
        db = b.model(*x)["age"]
    print(f"wrote {args.dst} ({args.dst.stat().st_size / 1e6:.1f} MB); max |age diff| vs source on 8 random "
          f"inputs: {float((da - db).abs().max()):.4f} years")


if __name__ == "__main__":
    main()
