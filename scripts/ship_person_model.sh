#!/usr/bin/env bash
# Issue 9's shipping steps, after scripts/mivolo_seeds.sh: pick the seed with the lowest validation MAE (the
# training run's results.json; test splits never choose), calibrate it per input combination on AAF val,
# store it as float16 in agekit/assets, and check its ONNX export's parity on real AAF test crops.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
AGEKIT=${AGEKIT:-.venv/bin/agekit}
best=$("$PY" - <<'PY'
import json, pathlib
runs = sorted(pathlib.Path("runs").glob("mivolo_lite0x2_aaf_peta_s[0-9]"))
scores = {str(r): json.loads((r / "results.json").read_text())["best_val_mae"] for r in runs if (r / "results.json").is_file()}
print(min(scores, key=scores.get))
PY
)
echo "selected by validation MAE: $best"
"$AGEKIT" calibrate "$best/model.safetensors" --data aaf --split val --out "$best/model_calibrated.safetensors" --overwrite
"$PY" scripts/ship_model.py "$best/model_calibrated.safetensors" agekit/assets/mivolo_lite0x2_aaf_peta.safetensors --fp16 \
  --selection "lowest best validation MAE of runs/mivolo_lite0x2_aaf_peta_s{0,1,2} (configs/mivolo_lite0x2_aaf_peta.yaml seeds 0-2); test splits scored after"
"$AGEKIT" export agekit/assets/mivolo_lite0x2_aaf_peta.safetensors --format onnx --out "$best/shipped.onnx"
