"""Shared helpers: run the nismooth binary, make NIfTI files with nibabel, read raw headers."""
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("NISMOOTH_BIN", ROOT / "target" / "release" / "nismooth"))
# The MPI launcher: PATH's mpirun (OpenMPI here), or NISMOOTH_MPIRUN (CI's
# MPICH pass sets mpiexec.mpich, with a binary built against MPICH).
MPIRUN = os.environ.get("NISMOOTH_MPIRUN") or shutil.which("mpirun")


def mpi_flavour():
    """"mpich" for a Hydra launcher (MPICH, Intel MPI), else "openmpi"."""
    if MPIRUN is None:
        return None
    out = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True).stdout
    return "mpich" if "HYDRA" in out.upper() else "openmpi"


MPI_FLAVOUR = mpi_flavour()
# The rank of this process, in either launcher's variable (a shell expansion).
RANK_VAR = "${OMPI_COMM_WORLD_RANK:-$PMI_RANK}"


def mpi_launch(ranks, *flags):
    """`mpirun -n RANKS`, with what this launcher needs to start more ranks
    than cores: OpenMPI wants --oversubscribe; Hydra oversubscribes freely and
    does not bind. OpenMPI-only `flags` (such as --bind-to none) go to OpenMPI."""
    if MPI_FLAVOUR == "mpich":
        return [MPIRUN, "-n", str(ranks)]
    return [MPIRUN, "-n", str(ranks), "--oversubscribe", *flags]


def nismooth(*args, expect=0, env=None):
    """Runs nismooth (with `env` added to the environment); asserts its exit
    code; returns the CompletedProcess."""
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, env=full_env)
    assert proc.returncode == expect, (
        f"exit {proc.returncode} (expected {expect})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def noise(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 300 + 500).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -20000), min(info.max, 20000)
    return rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)


def save(path, data, affine=None, endianness="<", slope_inter=None):
    """Writes `data` with nibabel; optional byte order and raw scl_slope/scl_inter."""
    hdr = nib.Nifti1Header(endianness=endianness)
    hdr.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine, header=hdr)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    if slope_inter is not None:
        # nibabel recomputes scaling on save; patch the raw fields afterwards.
        raw = bytearray(read_bytes(path))
        fmt = ">f" if endianness == ">" else "<f"
        raw[112:116] = np.array(slope_inter[0], dtype=fmt).tobytes()
        raw[116:120] = np.array(slope_inter[1], dtype=fmt).tobytes()
        write_bytes(path, bytes(raw))
    return path


def outputs(d):
    """The entries of an output directory, without nismooth's journal folder."""
    return sorted(p for p in Path(d).iterdir() if p.name != ".nismooth")


def names(d):
    return [p.name for p in outputs(d)]


def read_bytes(path):
    path = Path(path)
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def write_bytes(path, data):
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1)
    path.write_bytes(data)


def header_bytes_without_type_fields(path):
    """Bytes 0..vox_offset with datatype, bitpix, scl_slope and scl_inter blanked."""
    raw = bytearray(read_bytes(path)[:352])
    for a, b in [(70, 74), (112, 120)]:
        raw[a:b] = bytes(b - a)
    return bytes(raw)


@pytest.fixture(scope="session")
def binary():
    assert BIN.exists(), f"build nismooth first: {BIN} is missing (cargo build --release)"
    return BIN
