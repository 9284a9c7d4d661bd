#!/usr/bin/env bash
# Builds the GPU binary for a machine that has CUDA but no Rust and no MPI
# (the device machine of docs/gpu.md) and gathers what it needs to run into
# .device/: the binary (no MPI, feature cuda) and libisal.so.2, the gzip codec
# it links. The CUDA driver and NVRTC are the target's own, loaded at run time.
#
#   bash scripts/device_bundle.sh          # then carry .device (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
cargo build --release --no-default-features --features cli,cuda --target-dir target/device
mkdir -p .device
cp target/device/release/nismooth .device/nismooth
cp "$(ldconfig -p | awk '/libisal\.so\.2 / {print $NF; exit}')" .device/libisal.so.2
ls -l .device
echo "run there with: LD_LIBRARY_PATH=\$PWD/.device .device/nismooth ..."
