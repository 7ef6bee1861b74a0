#!/usr/bin/env bash
# Issue 9's face+body model, 3 seeds (about 20 min each on 2 CPU cores), then each seed scored on validation
# (selection) -- the test splits are scored once, by scripts/mivolo_table.py, after the choice.
set -euo pipefail
cd "$(dirname "$0")/.."
AGEKIT=${AGEKIT:-.venv/bin/agekit}
for seed in ${SEEDS:-0 1 2}; do
  "$AGEKIT" train configs/mivolo_lite0x2_aaf_peta.yaml trainer.seed=$seed \
    trainer.out_dir=runs/mivolo_lite0x2_aaf_peta_s$seed trainer.progress=none
done
