#!/usr/bin/env bash
# Installs the Python peer, builds nismooth, and measures every performance
# target side by side with the Python pipeline (scripts/bench.py).
# Usage: scripts/bench.sh [-n IMAGES] [--memory-images N] [--out docs/bench.md] [--json docs/bench.json]
#        [--baseline OTHER_NISMOOTH [--baseline-only]]   (this build against another, side by side)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
cargo build --release --quiet
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
python3 scripts/bench.py --binary target/release/nismooth "$@"
