"""One image over many ranks (`--split`): a run of fewer images than ranks cuts each image among all of
them, a series by volumes and a 3-D image by z-slices with a halo of the z kernel's radius, and the
bytes are the single process's, for every container, byte order, dtype and boundary mode; every rank
does a real share (its busy time in the report); an image the cut cannot give exactly (wrap along z,
FSL's 3-D filter) is done by rank 0 alone, still exactly. A world killed in the middle of a shared
image leaves no output under its name, and `--resume` finishes it with the same bytes.
"""
import gzip
import json
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import BIN, MPIRUN, mpi_launch

pytestmark = pytest.mark.skipif(
    MPIRUN is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="no mpirun (CI sets NISMOOTH_REQUIRE_MPI=1 so that this cannot pass silently)",
)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", RUST_LOG="info")


def single(args):
    proc = subprocess.run([str(BIN), "run", *map(str, args)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return proc


def mpirun(ranks, args, expect=0, env=None):
    proc = subprocess.run([*mpi_launch(ranks), str(BIN), "run", *map(str, args)], capture_output=True, text=True,
                          env=dict(ENV, **(env or {})), timeout=180)
    assert proc.returncode == expect, proc.stderr
    return proc


def noisy(path, shape, dtype=np.float32, seed=0, nifti2=False, big_endian=False):
    data = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    if big_endian:
        data = data.astype(data.dtype.newbyteorder(">"))
    img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, np.diag([2.0, 2.0, 2.5, 1.0]))
    if big_endian:
        img.header.set_data_dtype(data.dtype)
    nib.save(img, path)
    return data


# name: (file name, shape, dtype, nismooth options, ranks, cut); 3-D images of 3 MiB or more (3 gzip chunks).
CASES = {
    "3-D float32 .nii": ("a.nii", (128, 96, 64), np.float32, [], 2, True),
    "4-D int16 .nii": ("a.nii", (64, 48, 20, 40), np.int16, [], 2, True),
    "3-D .nii.gz, 3 ranks": ("a.nii.gz", (128, 96, 64), np.float32, [], 3, True),
    "4-D .nii.gz, 4 ranks": ("a.nii.gz", (64, 48, 20, 41), np.int16, [], 4, True),
    "3-D odd sigma, mirror": ("a.nii", (128, 96, 64), np.float32, ["--sigma", "1.7,0.9,3.3", "--mode", "mirror"], 3, True),
    "3-D nearest, int16 to float32": ("a.nii", (160, 128, 64), np.int16, ["--mode", "nearest", "--dtype", "float32"], 2, True),
    "3-D constant cval": ("a.nii.gz", (128, 96, 64), np.float32, ["--mode", "constant", "--cval", "7"], 2, True),
    "3-D NIfTI-2 uint8": ("n2.nii", (160, 160, 120), np.uint8, [], 2, True),
    "3-D big-endian float32 to .nii.gz": ("be.nii", (128, 96, 64), np.float32, ["--format", "nii.gz"], 2, True),
    "4-D nilearn": ("a.nii", (64, 48, 20, 40), np.int16, ["--compat", "nilearn", "--fwhm", "6", "--split", "always"], 2, True),
    "4-D fsl": ("a.nii", (64, 48, 20, 40), np.float32, ["--compat", "fsl", "--sigma", "3", "--split", "always"], 2, True),
    "3-D wrap: not cut": ("a.nii", (128, 96, 64), np.float32, ["--mode", "wrap", "--split", "always"], 2, False),
    "3-D fsl: not cut": ("a.nii", (128, 96, 64), np.float32, ["--compat", "fsl", "--sigma", "3", "--split", "always"], 2, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_image_over_ranks_is_the_single_process_bytes(tmp_path, case):
    name, shape, dtype, opts, ranks, cut = CASES[case]
    src = tmp_path / "in" / name
    src.parent.mkdir()
    noisy(src, shape, dtype, seed=len(case), nifti2="NIfTI-2" in case, big_endian="big-endian" in case)
    one, many, report = tmp_path / "one", tmp_path / "many", tmp_path / "r.json"
    single([src.parent, "-o", one, "--no-sync", *opts])
    # Parts of one volume or slice each: every unit crosses a part's edge.
    proc = mpirun(ranks, [src.parent, "-o", many, "--threads", "1", "--report", report, *opts],
                  env={"NISMOOTH_PART_BYTES": "1"})
    (written,) = [p for p in one.iterdir() if not p.name.startswith(".")]
    assert (many / written.name).read_bytes() == written.read_bytes()
    assert sorted(p.name for p in many.iterdir() if p.name != ".nismooth") == [written.name], "no temp file"
    r = json.loads(report.read_text())
    (img,) = r["images"]
    assert img["status"] == "ok" and img["voxels"] == int(np.prod(shape))
    busy = {p["rank"]: p["busy_s"] for p in r["processes"]}
    if cut:
        assert img["note"] == f"shared by {ranks} ranks"
        assert all(b > 0 for b in busy.values()), busy
        assert "shared by" in proc.stderr and "rank 1 " in proc.stderr
    else:
        assert busy[0] > 0 and all(b == 0 for k, b in busy.items() if k > 0), busy
        assert "not cut" in proc.stderr


def test_a_shared_image_is_scipys(tmp_path):
    src = tmp_path / "in" / "a.nii"
    src.parent.mkdir()
    data = noisy(src, (128, 96, 64), seed=3)
    mpirun(2, [src.parent, "-o", tmp_path / "out", "--threads", "1"])
    got = np.asanyarray(nib.load(tmp_path / "out" / "a.nii").dataobj)
    assert np.array_equal(got, gaussian_filter(data, 2.0))


def test_auto_shares_images_only_when_ranks_would_wait(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noisy(src / "a.nii.gz", (128, 96, 64))
    proc = mpirun(2, [src, "-o", tmp_path / "one", "--threads", "1"])
    assert "each image is shared" in proc.stderr
    noisy(src / "b.nii", (32, 32, 16))
    proc = mpirun(2, [src, "-o", tmp_path / "two", "--threads", "1"])
    assert "each image is shared" not in proc.stderr
    proc = mpirun(3, [src, "-o", tmp_path / "never", "--threads", "1", "--split", "never"])
    assert "each image is shared" not in proc.stderr
    # FSL's and nilearn's 3-D filters cannot be cut: auto keeps one image per rank.
    (src / "b.nii").unlink()
    proc = mpirun(2, [src, "-o", tmp_path / "nl", "--threads", "1", "--compat", "nilearn", "--fwhm", "6"])
    assert "each image is shared" not in proc.stderr


def test_a_world_killed_mid_image_leaves_nothing_and_resume_finishes_it(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noisy(src / "a.nii", (128, 96, 64), seed=5)
    noisy(src / "b.nii", (128, 96, 64), seed=6)
    whole = tmp_path / "whole"
    single([src, "-o", whole, "--no-sync"])
    out = tmp_path / "out"
    # Rank 1 dies after writing its share of the first image, before root puts it in place: the
    # world is aborted (every rank killed), as a kill -9 of one rank under mpirun does.
    proc = subprocess.run([*mpi_launch(3), str(BIN), "run", src, "-o", out, "--threads", "1"], capture_output=True,
                          text=True, env=dict(ENV, NISMOOTH_INJECT_PANIC="split:1"), timeout=180)
    assert proc.returncode != 0
    assert not (out / "a.nii").exists() and not (out / "b.nii").exists()
    assert list(out.glob(".*.tmp")), "the killed world left its temp file"
    mpirun(3, [src, "-o", out, "--threads", "1", "--resume"])
    for name in ("a.nii", "b.nii"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()
    assert list(out.glob(".*.tmp")) == []
