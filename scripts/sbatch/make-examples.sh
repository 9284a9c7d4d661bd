#!/usr/bin/env bash
# Regenerates the example job scripts in this folder, one per parallel model,
# with `nismooth sbatch` (binary: the release build; nismooth on PATH in the scripts).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/nismooth
[ -x "$bin" ] || cargo build --release --quiet
common=(--partition compute --time 02:00:00 --binary nismooth)
run=(-- /data/T1w -o /scratch/smoothed --sigma 2)
"$bin" sbatch --model serial "${common[@]}" --mem 1G --write scripts/sbatch/serial.sh "${run[@]}"
"$bin" sbatch --model threads --cpus-per-task 8 "${common[@]}" --mem 2G --write scripts/sbatch/threads.sh "${run[@]}"
"$bin" sbatch --model mpi --nodes 4 --ntasks-per-node 16 "${common[@]}" --mem-per-cpu 512M --write scripts/sbatch/mpi.sh "${run[@]}"
"$bin" sbatch --model array --array-tasks 100 --array-limit 20 "${common[@]}" --mem 1G --write scripts/sbatch/array.sh "${run[@]}"
"$bin" sbatch --model gpu --nodes 2 --gpus-per-node 4 --cpus-per-task 4 "${common[@]}" --mem-per-cpu 2G --write scripts/sbatch/gpu.sh "${run[@]}"
"$bin" sbatch --model hybrid --nodes 4 --ntasks-per-node 4 --cpus-per-task 4 "${common[@]}" --mem-per-cpu 512M --write scripts/sbatch/hybrid.sh "${run[@]}"
echo "wrote scripts/sbatch/{serial,threads,mpi,array,gpu,hybrid}.sh"
