#!/usr/bin/env bash
# Create .venv and install agekit with the pinned constraints. Idempotent: reinstalls only when
# pyproject.toml or constraints.txt change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.agekit-install-stamp
want=$(cat pyproject.toml constraints.txt | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,mobile]"
  # litert-torch (TFLite export) and two of its parts: --no-deps, see [tool.agekit] in pyproject.toml
  nodeps=$(.venv/bin/python - <<'PY'
try:
    import tomllib
except ImportError:  # Python 3.10: tomli comes with the mobile extra
    import tomli as tomllib
print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["agekit"]["mobile-no-deps"]))
PY
)
  .venv/bin/python -m pip install -q -c constraints.txt --no-deps $nodeps
  echo "$want" > "$stamp"
fi
# The web-page test drives Debian's chromium through Playwright (no browser download): install it when missing
# and we may (root with apt-get, as on CI); otherwise that test is skipped and says why.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium (apt-get) for the web-page test ..."
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "setup: warning: could not install chromium; tests/test_serve_page.py will be skipped" >&2
  fi
fi
