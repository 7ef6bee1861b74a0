#!/usr/bin/env bash
# Run the benchmark with the system allocator and with tcmalloc, then compare them.
# tcmalloc (Debian/Ubuntu: apt-get install -y libtcmalloc-minimal4) is reported to speed up
# small-model CPU inference; this measures it here instead of assuming it.
#   benchmarks/run.sh [bench.py options, e.g. --threads 2 --quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TAG=${TAG:-$(date +%Y%m%d-%H%M)}
$PY benchmarks/bench.py --name "bench-$TAG" "$@"
TC=$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 \
        /usr/lib64/libtcmalloc_minimal.so.4 2>/dev/null | head -n1 || true)
if [[ -z "$TC" ]]; then
  echo "tcmalloc not found; install it with: apt-get install -y libtcmalloc-minimal4" >&2
  exit 0
fi
LD_PRELOAD="$TC" $PY benchmarks/bench.py --name "bench-$TAG-tcmalloc" "$@"
$PY benchmarks/bench.py --compare "benchmarks/results/bench-$TAG.json" "benchmarks/results/bench-$TAG-tcmalloc.json"
