#!/usr/bin/env bash
# README command 2: set up, then run the default test suite (slow/real-training checks excluded;
# run them with: .venv/bin/python -m pytest -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
