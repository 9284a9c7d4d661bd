#!/usr/bin/env bash
# Builds nismooth with MPI and runs the side-by-side MPI benchmark (1 vs 2 ranks; schedules).
# Usage: scripts/bench_mpi.sh [-n IMAGES] [--reps R] [--out docs/bench-mpi.md]
set -euo pipefail
cd "$(dirname "$0")/.."
NISMOOTH_SKIP_PYTHON=1 bash ci/install-deps.sh
cargo build --release --quiet
python3 scripts/bench_mpi.py --binary target/release/nismooth "$@"
