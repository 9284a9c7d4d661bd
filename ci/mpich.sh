#!/usr/bin/env bash
# nismooth's MPI build against MPICH (Debian's mpich and libmpich-dev) beside
# the default OpenMPI one: the portability a site that builds against its own
# MPI relies on. Builds with MPICC=mpicc.mpich into target/mpich, checks that
# the binary links MPICH (and not OpenMPI) and says so in --version, then runs
# every test that starts ranks under MPICH's launcher (Hydra):
# NISMOOTH_MPIRUN for the tests that take the launcher from conftest, and a
# PATH folder whose mpirun and mpiexec are MPICH's for those that call
# `mpirun` by name (and for `nismooth study`, which does too).
set -euo pipefail
cd "$(dirname "$0")/.."

MPICC=mpicc.mpich cargo build --profile ci --quiet --target-dir target/mpich --bin nismooth
bin="$PWD/target/mpich/ci/nismooth"
ldd "$bin" | grep -q libmpich || { echo "ci/mpich.sh: $bin does not link libmpich" >&2; exit 1; }
! ldd "$bin" | grep -q "libmpi\.so" || { echo "ci/mpich.sh: $bin links OpenMPI's libmpi" >&2; exit 1; }
"$bin" --version | grep "^MPI: MPICH"

shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
hydra=$(command -v mpiexec.mpich)
for name in mpirun mpiexec; do
  # Not a symlink: Hydra looks for its proxy beside the path it was started by.
  printf '#!/bin/sh\nexec %s "$@"\n' "$hydra" >"$shim/$name"
  chmod +x "$shim/$name"
done
PATH="$shim:$PATH" NISMOOTH_REQUIRE_MPI=1 NISMOOTH_MPIRUN="$hydra" NISMOOTH_BIN="$bin" \
  python3 -m pytest -q tests/python/test_mpi.py tests/python/test_data_safety.py tests/python/test_study.py \
  tests/python/test_signals.py tests/python/test_bids.py tests/python/test_inputs.py -k "mpi or study"
