#!/usr/bin/env bash
# Quick start: install what is missing, build, generate a small sample, smooth it, show the report.
set -euo pipefail
cd "$(dirname "$0")/.."
NISMOOTH_SKIP_PYTHON=1 bash ci/install-deps.sh
cargo build --release --quiet
bin=target/release/nismooth
rm -rf sample
$bin generate -o sample/in -n 8 --shape 128,128,80 --dtype float32 --seed 1
$bin run sample/in -o sample/out --sigma 2 --report sample/report.json --csv sample/report.csv
echo
echo "outputs:  $(ls sample/out | wc -l) files in sample/out"
echo "reports:  sample/report.json, sample/report.csv"
