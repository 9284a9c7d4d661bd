#!/usr/bin/env bash
# The CUDA backend's figures, on a machine with a GPU (docs/gpu.md): the
# kernels alone against the memory roofline, the filter against the CPU
# backend on all cores, and whole runs (read → filter → write) on the GPU
# against the CPU at equal processes. Prints a Markdown report; also written
# to $OUT/bench-cuda.md when OUT is set.
#
#   bash scripts/bench_cuda.sh [BIN]     (BIN: a --features cuda build; default .device/nismooth)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.device/nismooth}
export LD_LIBRARY_PATH="$(cd "$(dirname "$BIN")" && pwd):${LD_LIBRARY_PATH:-}"
# NVRTC: the system's, else the one pip installed beside PyTorch or by ci/install-deps.sh.
if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
  LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(bash ci/nvrtc-path.sh 2>/dev/null || true)"
fi
CORES=$(nproc)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
REPORT=${OUT:-$W}/bench-cuda.md

"$BIN" generate -o "$W/gz" -n 16 --shape 256,256,128 --dtype float32 --seed 1 --format nii-gz >/dev/null
"$BIN" generate -o "$W/nii" -n 16 --shape 256,256,128 --dtype float32 --seed 1 --format nii >/dev/null
"$BIN" generate -o "$W/i16" -n 1 --shape 256,256,128 --dtype int16 --seed 2 --format nii >/dev/null
ONE=$(ls "$W"/nii/* | head -1)
I16=$(ls "$W"/i16/* | head -1)

# Device-to-device copy bandwidth (reads + writes), the roofline's slope, when PyTorch is there.
COPY_GBS=$(python3 - <<'PY' 2>/dev/null || echo ""
import torch
x = torch.empty(1 << 28, dtype=torch.float32, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
torch.cuda.synchronize(); s, e = torch.cuda.Event(True), torch.cuda.Event(True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"{2 * x.numel() * 4 * 20 / (s.elapsed_time(e) / 1e3) / 1e9:.0f}")
PY
)

json() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(d$1)"; }
{
  echo "# CUDA backend: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1), $CORES cores"
  echo
  echo "Device-to-device copy (PyTorch): ${COPY_GBS:-n/a} GB/s counting reads and writes."
  echo
  echo "| image | σ | GPU kernels | Gvox/s | effective GB/s | share of copy bandwidth | GPU call incl. copies | CPU, $CORES threads | CPU / GPU call |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for img in "$ONE" "$I16"; do
    for sigma in 1 2 4; do
      G=$("$BIN" bench-filter "$img" --backend cuda --sigma $sigma --reps 10 2>/dev/null)
      C=$("$BIN" bench-filter "$img" --backend cpu --threads "$CORES" --sigma $sigma --reps 5)
      python3 - "$G" "$C" "${COPY_GBS:-0}" "$(basename "$(dirname "$img")")" $sigma <<'PY'
import json, sys
g, c, copy, name, sigma = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
share = f"{g['effective_gb_per_s'] / copy:.0%}" if copy else "n/a"
print(f"| {name} 256×256×128 | {sigma} | {g['kernel_best_s']*1e3:.3f} ms | {g['gvox_per_s']:.1f} | {g['effective_gb_per_s']:.0f} | {share} "
      f"| {g['best_s']*1e3:.1f} ms | {c['best_s']*1e3:.1f} ms | {c['best_s']/g['best_s']:.1f}× |")
PY
    done
  done
  echo
  echo "Whole runs, 16 float32 images, one process with $CORES threads (median of 3):"
  echo
  echo "| set | CPU backend | CUDA backend | CUDA / CPU images per second |"
  echo "|---|---|---|---|"
  for set in gz nii; do
    declare -A best=()
    for backend in cpu cuda; do
      ts=()
      for rep in 1 2 3; do
        rm -rf "$W/out"
        s=$(date +%s.%N)
        "$BIN" run "$W/$set" -o "$W/out" --backend $backend --threads "$CORES" --progress none 2>/dev/null
        ts+=("$(python3 -c "print($(date +%s.%N) - $s)")")
      done
      best[$backend]=$(printf '%s\n' "${ts[@]}" | sort -g | sed -n 2p)
    done
    python3 -c "c, g = ${best[cpu]}, ${best[cuda]}; print(f'| {\"$set\"} | {c:.2f} s | {g:.2f} s | {c/g:.2f}× |')"
  done
} | tee "$REPORT"
