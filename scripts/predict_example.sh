#!/usr/bin/env bash
# README command 1: set up, then predict age and gender on the bundled example photo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/agekit predict agekit/assets/astronaut.jpg --out out/astronaut.json --draw out/ "$@"
