#!/usr/bin/env bash
# Quick start: install what is missing, build, generate a small sample, smooth it
# in one process and on 2 MPI ranks, show the reports and check the outputs agree.
set -euo pipefail
cd "$(dirname "$0")/.."
NISMOOTH_SKIP_PYTHON=1 bash ci/install-deps.sh
cargo build --release --quiet
bin=target/release/nismooth
rm -rf sample
$bin generate -o sample/in -n 8 --shape 128,128,80 --dtype float32 --seed 1
$bin run sample/in -o sample/out --sigma 2 --report sample/report.json --csv sample/report.csv
echo
if command -v mpirun >/dev/null; then
  # OpenMPI refuses root unless told; the demo often runs as root in containers.
  [ "$(id -u)" -ne 0 ] || export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  echo "== the same job on 2 MPI ranks"
  mpirun -n 2 $bin run sample/in -o sample/out-mpi --sigma 2 --threads 1 --report sample/report-mpi.json
  diff -r sample/out sample/out-mpi >/dev/null && echo "2-rank outputs are byte-identical to the 1-process outputs"
  echo
fi
echo "outputs:  $(ls sample/out | wc -l) files in sample/out"
echo "reports:  sample/report.json, sample/report.csv, sample/report-mpi.json"
