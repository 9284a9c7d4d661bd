#!/usr/bin/env bash
# Regenerates the example job scripts in this folder, one per parallel model,
# with `nismooth sbatch` (binary: the release build; nismooth on PATH in the scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${NISMOOTH:-target/release/nismooth}
[ -x "$bin" ] || cargo build --release --quiet
bin=$(realpath "$bin")
here=$PWD/scripts/sbatch
# sbatch refuses inputs that do not exist: the examples name a folder of
# 200 tiny phantoms, relative to the job's working directory.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" generate -o "$work/data/T1w" -n 200 --shape 4,4,2
# The scripts are written as for an install at /opt/nismooth built with
# CUDA (sbatch runs the job's binary's --version to check it can run gpu):
# a stand-in on PATH answers for it, and its folder is renamed after.
mkdir "$work/bin"
printf '#!/bin/sh\n[ "$1" = --version ] && exec echo "nismooth (features: cpu, mpi, cuda)"\nexec %s "$@"\n' "$bin" > "$work/bin/nismooth"
chmod +x "$work/bin/nismooth"
export PATH="$work/bin:$PATH"
cd "$work"
common=(--partition compute --time 02:00:00 --binary nismooth)
run=(-- data/T1w -o smoothed --sigma 2)
"$bin" sbatch --model serial "${common[@]}" --mem 1G --write $here/serial.sh "${run[@]}"
"$bin" sbatch --model threads --cpus-per-task 8 "${common[@]}" --mem 2G --write $here/threads.sh "${run[@]}"
"$bin" sbatch --model mpi --nodes 4 --ntasks-per-node 16 "${common[@]}" --mem-per-cpu 512M --write $here/mpi.sh "${run[@]}"
"$bin" sbatch --model array --array-tasks 100 --array-limit 20 "${common[@]}" --mem 1G --write $here/array.sh "${run[@]}"
"$bin" sbatch --model gpu --nodes 2 --gpus-per-node 4 --cpus-per-task 4 "${common[@]}" --mem-per-cpu 2G --write $here/gpu.sh "${run[@]}"
"$bin" sbatch --model mpi --nodes 2 --ntasks-per-node 16 --requeue "${common[@]}" --mem-per-cpu 512M --write $here/mpi-requeue.sh "${run[@]}"
"$bin" sbatch --model hybrid --nodes 4 --ntasks-per-node 4 --cpus-per-task 4 --account mylab --qos normal --mail-type END,FAIL --module openmpi "${common[@]}" --mem-per-cpu 512M --write $here/hybrid.sh "${run[@]}"
sed -i "s#$work/bin/nismooth#/opt/nismooth/bin/nismooth#" "$here"/{serial,threads,mpi,mpi-requeue,array,gpu,hybrid}.sh
echo "wrote scripts/sbatch/{serial,threads,mpi,mpi-requeue,array,gpu,hybrid}.sh"
