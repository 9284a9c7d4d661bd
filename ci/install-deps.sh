#!/usr/bin/env bash
# Installs what nismooth needs to build and test on Debian/Ubuntu, only when missing:
# ISA-L (gzip codec), OpenMPI with PMIx (rsmpi's bindgen needs libclang), MPICH
# (the second MPI the build is tested against: ci/mpich.sh) and DejaVu
# fonts (text in the study's PNG plots) and strace (the durability test
# watches fsync and rename) from Debian,
# the Python references (numpy, scipy, nibabel, nilearn, pytest) and the
# official BIDS validator (bids-validator-deno) from PyPI, and NVRTC
# (CUDA's run-time compiler, no GPU needed) from PyPI for the cuda feature's tests.
set -euo pipefail

need_apt=()
for pkg in libisal-dev libopenmpi-dev openmpi-bin libclang-dev libpmix-dev mpich libmpich-dev fonts-dejavu-core strace; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if ((${#need_apt[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "== apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${NISMOOTH_SKIP_PYTHON:-0}" != 1 ]; then
  # hypothesis: scipy's own test_filters.py imports it (run against ours in CI).
  if ! python3 -c "import numpy, scipy, nibabel, nilearn, pytest, hypothesis" >/dev/null 2>&1; then
    echo "== pip install numpy scipy nibabel nilearn pytest hypothesis"
    python3 -m pip install -q --disable-pip-version-check numpy scipy nibabel nilearn pytest hypothesis 2>&1 | grep -v "Running pip as the 'root' user" || true
  fi
  if ! command -v bids-validator-deno >/dev/null 2>&1; then
    echo "== pip install bids-validator-deno"
    python3 -m pip install -q --disable-pip-version-check bids-validator-deno 2>&1 | grep -v "Running pip as the 'root' user" || true
  fi
fi

# NVRTC 13.0, to compile the CUDA kernels in tests/cuda_nvrtc.rs; ci/nvrtc-path.sh finds it.
if [ "${NISMOOTH_SKIP_NVRTC:-0}" != 1 ] && ! bash "$(dirname "$0")/nvrtc-path.sh" >/dev/null 2>&1; then
  echo "== pip install nvidia-cuda-nvrtc==13.0.*"
  python3 -m pip install -q --disable-pip-version-check "nvidia-cuda-nvrtc==13.0.*" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
