"""The CUDA backend on a real GPU: bit-identical to the CPU backend (itself
checked against scipy in tests/python) on every mode and dtype, with several
images in flight and several processes sharing one GPU; and equal to scipy
directly.

Needs a binary built with `--features cuda` and a GPU; runs only with
NISMOOTH_GPU_TESTS=1 (CI has no GPU: there the kernels are checked on the host
by tests/cuda_kernels_on_host.rs and through NVRTC by tests/cuda_nvrtc.rs).
Only numpy and scipy are needed, not nibabel: the device machine lacks it, and
the NIfTI-1 files read here are nismooth's own. How to run it on the device
machine: docs/gpu.md.
"""
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("NISMOOTH_BIN", ROOT / "target" / "release" / "nismooth"))

pytestmark = pytest.mark.skipif(
    os.environ.get("NISMOOTH_GPU_TESTS") != "1",
    reason="GPU tests: set NISMOOTH_GPU_TESTS=1 on a machine with a GPU and a --features cuda build",
)

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
MODES = ["reflect", "nearest", "mirror", "constant", "wrap"]
NIFTI_TYPES = {2: "u1", 256: "i1", 4: "<i2", 512: "<u2", 8: "<i4", 768: "<u4",
               1024: "<i8", 1280: "<u8", 16: "<f4", 64: "<f8"}


def run(*args, env=None, expect=0):
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stderr}"
    return proc


def read_nii(path):
    """A little-endian NIfTI-1 .nii of nismooth's making, as a Fortran-ordered array."""
    raw = Path(path).read_bytes()
    dims = np.frombuffer(raw, "<i2", 8, 40)
    code = int(np.frombuffer(raw, "<i2", 1, 70)[0])
    offset = int(np.frombuffer(raw, "<f4", 1, 108)[0])
    shape = tuple(int(d) for d in dims[1 : 1 + dims[0]])
    return np.frombuffer(raw, NIFTI_TYPES[code], int(np.prod(shape)), offset).reshape(shape, order="F")


def files(d):
    return sorted(p for p in Path(d).iterdir() if p.is_file())


def same_files(a, b):
    fa, fb = files(a), files(b)
    assert [p.name for p in fa] == [p.name for p in fb]
    for x, y in zip(fa, fb):
        assert x.read_bytes() == y.read_bytes(), f"{x.name} differs between the CPU and the GPU"
    return len(fa)


@pytest.fixture(scope="module")
def gpu(tmp_path_factory):
    """Fails (does not skip) when the GPU tests were asked for but CUDA cannot start."""
    d = tmp_path_factory.mktemp("probe")
    run("generate", "-o", d, "-n", "1", "--shape", "16,16,16", "--format", "nii")
    proc = run("bench-filter", files(d)[0], "--backend", "cuda", "--reps", "1")
    assert "kernel_best_s" in proc.stdout, proc.stdout
    return proc.stderr


@pytest.fixture(scope="module")
def every_dtype(tmp_path_factory):
    d = tmp_path_factory.mktemp("dtypes")
    for i, dt in enumerate(DTYPES):
        run("generate", "-o", d / dt, "-n", "1", "--shape", "61,47,33", "--dtype", dt, "--seed", i, "--format", "nii")
        for p in (d / dt).iterdir():
            p.rename(d / f"{dt}_{p.name}")
        (d / dt).rmdir()
    run("generate", "-o", d / "4d", "-n", "1", "--shape", "20,18,16,5", "--dtype", "int16", "--seed", 99, "--format", "nii")
    for p in (d / "4d").iterdir():
        p.rename(d / f"4d_{p.name}")
    (d / "4d").rmdir()
    return d


@pytest.mark.parametrize("mode", MODES)
def test_every_dtype_is_bit_identical_to_the_cpu(gpu, every_dtype, tmp_path, mode):
    for sigma, dtype in [("2", "input"), ("1.5,0,3", "float32"), ("0.7", "float64")]:
        outs = {}
        for backend in ["cpu", "cuda"]:
            out = tmp_path / f"{backend}-{sigma}-{dtype}"
            run("run", every_dtype, "-o", out, "--backend", backend, "--mode", mode, "--cval", "7.5",
                "--sigma", sigma, "--dtype", dtype, "--progress", "none")
            outs[backend] = out
        assert same_files(outs["cpu"], outs["cuda"]) == len(DTYPES) + 1


def test_many_images_in_flight_through_the_pipeline(gpu, tmp_path):
    src = tmp_path / "in"
    run("generate", "-o", src, "-n", "12", "--shape", "96,80,64", "--vary-size", "--seed", 4)
    outs = {}
    for backend in ["cpu", "cuda"]:
        outs[backend] = tmp_path / backend
        proc = run("run", src, "-o", outs[backend], "--backend", backend, "--progress", "none",
                   "--report", tmp_path / f"{backend}.json")
    assert "backend cuda:" in proc.stderr
    assert same_files(outs["cpu"], outs["cuda"]) == 12


def test_four_processes_share_one_gpu(gpu, tmp_path):
    src = tmp_path / "in"
    run("generate", "-o", src, "-n", "16", "--shape", "64,64,48", "--vary-size", "--seed", 8)
    run("run", src, "-o", tmp_path / "cpu", "--backend", "cpu", "--progress", "none")
    gpu_out = tmp_path / "cuda"

    def task(i):
        env = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "4",
               "SLURM_LOCALID": str(i), "RUST_LOG": "info"}
        return run("run", src, "-o", gpu_out, "--array", "--backend", "cuda", "--progress", "none", env=env)

    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(task, range(4)))
    for p in procs:
        assert "backend cuda:" in p.stderr and "device 0 of" in p.stderr
    assert same_files(tmp_path / "cpu", gpu_out) == 16


def test_equal_to_scipy_directly(gpu, tmp_path):
    from scipy import ndimage

    for dt in ["float32", "int16", "uint8"]:
        src = tmp_path / dt
        run("generate", "-o", src, "-n", "1", "--shape", "70,60,50", "--dtype", dt, "--seed", 3, "--format", "nii")
        for mode in MODES:
            out = tmp_path / f"out-{dt}-{mode}"
            run("run", src, "-o", out, "--backend", "cuda", "--mode", mode, "--progress", "none")
            (inp,) = files(src)
            got = read_nii(out / inp.name)
            ref = ndimage.gaussian_filter(read_nii(inp), 2, mode=mode)
            assert got.dtype == ref.dtype and np.array_equal(got, ref), f"{dt} {mode}"


def test_nan_and_inf_where_the_cpu_has_them(gpu, tmp_path):
    src = tmp_path / "in"
    run("generate", "-o", src, "-n", "1", "--shape", "40,30,20", "--format", "nii", "--seed", 2)
    (p,) = files(src)
    raw = bytearray(p.read_bytes())
    offset = int(np.frombuffer(raw, "<f4", 1, 108)[0])
    vox = np.frombuffer(raw, "<f4", 40 * 30 * 20, offset).copy()
    vox[[5, 1000, 1001, 7000]] = [np.nan, np.inf, -np.inf, np.inf]
    raw[offset:] = vox.tobytes()
    p.write_bytes(bytes(raw))
    for backend in ["cpu", "cuda"]:
        run("run", src, "-o", tmp_path / backend, "--backend", backend, "--progress", "none")
    cpu, cuda = (read_nii(tmp_path / b / p.name) for b in ["cpu", "cuda"])
    assert np.isnan(cpu).any() and np.isinf(cpu).any()
    assert np.array_equal(cpu, cuda, equal_nan=True)


def test_long_4d_images_in_batches_of_volumes(gpu, tmp_path):
    # A slot budget of 3 volumes' worth forces 13 volumes through in 5 batches.
    src = tmp_path / "in"
    run("generate", "-o", src, "-n", "2", "--shape", "40,36,30,13", "--dtype", "int16", "--seed", 6, "--format", "nii")
    run("run", src, "-o", tmp_path / "cpu", "--backend", "cpu", "--dtype", "float32", "--progress", "none")
    per_volume = 40 * 36 * 30 * (2 + 2 * 4)
    run("run", src, "-o", tmp_path / "cuda", "--backend", "cuda", "--dtype", "float32", "--progress", "none",
        env={"NISMOOTH_CUDA_SLOT_BYTES": str(3 * per_volume)})
    assert same_files(tmp_path / "cpu", tmp_path / "cuda") == 2
