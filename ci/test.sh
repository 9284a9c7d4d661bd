#!/usr/bin/env bash
# The full test suite (the README's test command; .ci/run calls it):
# install dependencies, lint, build, Rust unit + CLI tests, then the scipy/nibabel reference tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase says how long the run has taken so far (CI's budget is 25 minutes).
phase() { echo "== $* (at $SECONDS s)"; }

bash ci/install-deps.sh

phase "cargo fmt --check; no import cycle in the library"
cargo fmt --all -- --check
python3 scripts/import_cycles.py src
phase "cargo clippy (default features: MPI and the command line; the bare library; the command line without MPI; with CUDA; CUDA without MPI)"
cargo clippy --all-targets --quiet -- -D warnings
cargo clippy --all-targets --quiet --no-default-features -- -D warnings
# The library alone has no clap (feature cli): the fact, checked.
if cargo tree -e normal --no-default-features --prefix none | grep -E '^(clap|env_logger) '; then
  echo "ci/test.sh: the library without features depends on the command line's crates" >&2; exit 1
fi
cargo clippy --all-targets --quiet --no-default-features --features cli -- -D warnings
cargo clippy --all-targets --quiet --features cuda -- -D warnings
cargo clippy --all-targets --quiet --no-default-features --features cli,cuda -- -D warnings
cargo clippy --all-targets --quiet --no-default-features --features python -- -D warnings
phase "cargo build --release"
cargo build --release --quiet
phase "cargo test"
cargo test --release --quiet
phase "the wheel (manylinux2014, linked by zig): built, shown by auditwheel, installed and run in a fresh venv"
bash scripts/build_wheel.sh target/wheels-ci
phase "pip install the wheel (the Python module and the command, for the tests below)"
python3 -m pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels-ci/nismooth-*.whl \
  2>&1 | grep -v "Running pip as the 'root' user" || true
python3 -c "import nismooth; print('nismooth', nismooth.__version__, 'from', nismooth.__file__)"
phase "pytest tests/python (scipy $(python3 -c 'import scipy; print(scipy.__version__)'), nibabel $(python3 -c 'import nibabel; print(nibabel.__version__)'), nilearn $(python3 -c 'import nilearn; print(nilearn.__version__)'))"
# MPI tests must run here, not skip: CI has mpirun.
NISMOOTH_REQUIRE_MPI=1 NISMOOTH_BIN="$PWD/target/release/nismooth" python3 -m pytest -q tests/python
phase "scipy's and nilearn's own tests (scipy.ndimage.tests.test_filters, nilearn.image.tests.test_image, as their wheels ship them) with nismooth's Gaussian filters and smooth_img swapped in"
# Every test that calls one of them must pass (tests/references/swap.py counts them).
(cd tests/references && PYTHONPATH=. python3 -m pytest -q -p swap -p no:cacheprovider \
  --pyargs scipy.ndimage.tests.test_filters --swap scipy --swap-require)
(cd tests/references && PYTHONPATH=. python3 -m pytest -q -p swap -p no:cacheprovider \
  --pyargs nilearn.image.tests.test_image --swap nilearn --swap-require)
phase "MPICH: the MPI build against MPICH, and the tests that start ranks under its launcher"
bash ci/mpich.sh
# The GPU tests skip here (no GPU); collecting them keeps them importable and ready.
python3 -m pytest -q tests/gpu

# nismooth under a real Slurm: a one-node cluster, then two simulated nodes
# (network namespaces). Starting daemons needs root; NISMOOTH_SKIP_SLURM=1 skips.
if [ "${NISMOOTH_SKIP_SLURM:-0}" != 1 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "ci/test.sh: the Slurm tests start slurmctld/slurmd and need root (or NISMOOTH_SKIP_SLURM=1)" >&2; exit 1; }
  slurm_start=$SECONDS
  trap 'bash ci/slurm/stop.sh >/dev/null 2>&1 || true' EXIT
  for nodes in 1 2; do
    phase "Slurm: $nodes node(s)"
    bash ci/slurm/start.sh --nodes "$nodes"
    (
      source /tmp/nismooth-slurm/env.sh
      NISMOOTH_REQUIRE_SLURM=1 NISMOOTH_BIN="$PWD/target/release/nismooth" python3 -m pytest -q tests/slurm
    )
    bash ci/slurm/stop.sh
  done
  echo "== Slurm part: $((SECONDS - slurm_start)) s"
fi
# The cuda build on a machine without a GPU, with the kernels through the real
# NVRTC (from PyPI), --backend cuda refused cleanly and auto falling back.
# Only the targets that the feature changes: the library's own tests, the CLI
# (the refusal and the fallback) and the kernels. Built on the MPICH build's
# compiled dependencies (target/mpich, profile ci; MPICC says which MPI, as
# there), which saves compiling them a third time.
phase "cargo test --features cuda (no GPU here: NVRTC only; on the MPICH build)"
MPICC=mpicc.mpich NISMOOTH_REQUIRE_NVRTC=1 LD_LIBRARY_PATH="$(bash ci/nvrtc-path.sh):${LD_LIBRARY_PATH:-}" \
  cargo test --profile ci --target-dir target/mpich --quiet --features cuda --lib --test cli --test cuda_nvrtc --test cuda_kernels_on_host
phase "all tests passed"
