#!/usr/bin/env bash
# Builds nismooth, installs the Python peer, and runs the side-by-side core benchmark.
# Usage: scripts/bench_core.sh [-n IMAGES] [--dtype int16] [--out docs/bench-core.md]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
cargo build --release --quiet
python3 scripts/bench_core.py --binary target/release/nismooth "$@"
