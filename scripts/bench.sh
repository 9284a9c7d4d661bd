#!/usr/bin/env bash
# Installs the Python peer, builds nismooth, and measures every performance
# target side by side with the Python pipeline (scripts/bench.py), then the
# Python API against scipy (scripts/bench_python_api.py).
# Usage: scripts/bench.sh [-n IMAGES] [--memory-images N] [--out docs/bench.md] [--json docs/bench.json]
#        [--baseline OTHER_NISMOOTH [--baseline-only]]   (this build against another, side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
cargo build --release --quiet
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
python3 scripts/bench.py --binary target/release/nismooth "$@"
# The Python API against scipy (the module from `pip install .`), float32 and int16.
if python3 -c "import nismooth" 2>/dev/null; then
  python3 scripts/bench_python_api.py
  python3 scripts/bench_python_api.py --dtype int16
else
  echo "bench.sh: the Python module is not installed (pip install .): its rows are left out" >&2
fi
