#!/usr/bin/env bash
# Issue 9's variants side by side (one seed each, same data and recipe as the shipped model's config):
# mivolo_lite0_128 (VOLO body stem) and mivolo_s_96 (all VOLO, from scratch). mivolo_d1_224 needs VOLO-D1
# ImageNet weights from timm's hub (online) and a GPU; it is not trained here.
set -euo pipefail
cd "$(dirname "$0")/.."
AGEKIT=${AGEKIT:-.venv/bin/agekit}
for cfg in mivolo_lite0_aaf_peta mivolo_s_aaf_peta; do
  "$AGEKIT" train configs/$cfg.yaml trainer.progress=none
done
.venv/bin/python scripts/mivolo_table.py --variants --reuse docs/results/mivolo_body.json --reuse docs/results/mivolo_variants.json --out docs/results/mivolo_variants \
  --runs runs/mivolo_lite0x2_aaf_peta_s0 runs/mivolo_lite0_aaf_peta_s0 runs/mivolo_s_aaf_peta_s0
