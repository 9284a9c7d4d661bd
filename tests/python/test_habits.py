"""A fslmaths or nilearn user's habits, met: `-o out.nii.gz` names the output file when there is one
image (and is refused, creating nothing, when there are more); the kernel is stated in the log in σ
voxels and mm, FWHM and radius; `--fwhm` on integer data says the output stays integer; a second run
into the same folder says what it will replace; a missing BIDS folder "does not exist"; the summary
counts images, not tasks; the derivative README lists every kernel in its folder."""
import os
import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, ROOT

ENV = dict(os.environ, RUST_LOG="info")


def nismooth(*args, expect=0):
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, env=ENV)
    assert proc.returncode == expect, proc.stderr
    return proc


@pytest.fixture
def two(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for k, name in enumerate(("a.nii.gz", "b.nii.gz")):
        data = (np.random.default_rng(k).random((20, 18, 12)) * 1000).astype(np.int16)
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.5, 1.0])), d / name)
    return d


def test_o_naming_a_file_writes_that_file(two, tmp_path):
    nismooth("run", two, "-o", tmp_path / "folder")
    out = two / "a_s2.nii.gz"  # beside its input, as fslmaths users write
    nismooth("run", two / "a.nii.gz", "-o", out)
    assert out.read_bytes() == (tmp_path / "folder" / "a.nii.gz").read_bytes()
    plain = tmp_path / "a.nii"
    nismooth("run", two / "a.nii.gz", "-o", plain)
    assert plain.read_bytes()[:4] == (348).to_bytes(4, "little"), "a .nii name gets a .nii"
    got = np.asanyarray(nib.load(plain).dataobj)
    want = np.asanyarray(nib.load(tmp_path / "folder" / "a.nii.gz").dataobj)
    assert np.array_equal(got, want)


def test_o_naming_a_file_is_refused_for_several_images_and_creates_nothing(two, tmp_path):
    proc = nismooth("run", two, "-o", tmp_path / "x.nii.gz", expect=2)
    assert "names an output file" in proc.stderr and "has 2" in proc.stderr
    assert not (tmp_path / "x.nii.gz").exists()
    proc = nismooth("run", two / "a.nii.gz", "-o", tmp_path / "no" / "such" / "x.nii.gz", expect=2)
    assert "does not exist" in proc.stderr and not (tmp_path / "no").exists()
    proc = nismooth("run", two / "a.nii.gz", "-o", two / "a.nii.gz", expect=2)
    assert "is the input itself" in proc.stderr
    proc = nismooth("run", two / "a.nii.gz", "-o", tmp_path / "y.nii.gz", "--format", "nii", expect=2)
    assert "disagree" in proc.stderr
    proc = nismooth("run", two / "a.nii.gz", "-o", tmp_path / "y.hdr", expect=2)
    assert ".hdr/.img pair" in proc.stderr and not (tmp_path / "y.hdr").exists()
    # An existing folder whose name ends in .nii.gz stays a folder.
    (tmp_path / "dir.nii.gz").mkdir()
    nismooth("run", two, "-o", tmp_path / "dir.nii.gz")
    assert sorted(p.name for p in (tmp_path / "dir.nii.gz").glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz"]


def test_the_kernel_is_stated_and_integer_fwhm_is_warned(two, tmp_path):
    proc = nismooth("run", two, "-o", tmp_path / "out", "--fwhm", "6")
    lines = [line for line in proc.stderr.splitlines() if "kernel for" in line]
    assert len(lines) == 1, "once per voxel size"
    # FWHM 6 mm over 2 mm voxels: σ = 6 / 2.3548 / 2 = 1.274 voxels, 2.548 mm; radius int(4σ + 0.5) = 5.
    assert "kernel for 2 × 2 × 2.5 mm voxels" in lines[0]
    assert "σ 1.274, 1.274, 1.019 voxels = 2.548, 2.548, 2.548 mm (FWHM 6, 6, 6 mm), radius 5, 5, 4 voxels" in lines[0]
    assert "int16 data smoothed into int16" in proc.stderr and "--dtype float32" in proc.stderr
    quiet = nismooth("run", two, "-o", tmp_path / "nl", "--fwhm", "6", "--compat", "nilearn")
    assert "truncated toward zero" not in quiet.stderr


def test_a_second_run_says_what_it_replaces(two, tmp_path):
    first = nismooth("run", two, "-o", tmp_path / "out")
    assert "already exist" not in first.stderr
    second = nismooth("run", two, "-o", tmp_path / "out")
    assert "2 of the 2 outputs already exist" in second.stderr and "--resume" in second.stderr
    resumed = nismooth("run", two, "-o", tmp_path / "out", "--resume")
    assert "already exist" not in resumed.stderr


def test_the_summary_counts_images(two, tmp_path):
    proc = nismooth("run", two, "-o", tmp_path / "out")
    assert "2 images (2 ok, 0 failed, 0 skipped)" in proc.stdout and " tasks " not in proc.stdout
    assert "per image (s)" in proc.stdout and "above 1, the process also waited" in proc.stdout


def test_a_missing_bids_folder_does_not_exist(tmp_path):
    proc = nismooth("bids", tmp_path / "ds_typo", tmp_path / "out", "participant", expect=2)
    assert "ds_typo does not exist" in proc.stderr and "dataset_description" not in proc.stderr
    (tmp_path / "plain").mkdir()
    proc = nismooth("bids", tmp_path / "plain", tmp_path / "out", "participant", expect=2)
    assert "not a BIDS dataset" in proc.stderr


def test_a_derivative_readme_lists_every_kernel(tmp_path):
    raw = tmp_path / "raw"
    subprocess.run(["python3", str(ROOT / "scripts" / "make_bids_sample.py"), str(raw)],
                   check=True, capture_output=True)
    out = tmp_path / "deriv"
    nismooth("bids", raw, out, "participant", "--fwhm", "6")
    nismooth("bids", raw, out, "participant", "--fwhm", "8")
    readme = (out / "README.md").read_text()
    assert "FWHM 6" in readme and "FWHM 8" in readme, readme


def test_journals_of_older_runs_are_folded_and_still_vouch(two, tmp_path):
    out = tmp_path / "out"
    nismooth("run", two, "-o", out, "--no-sync")
    for _ in range(6):
        proc = nismooth("run", two, "-o", out, "--resume")
        assert "2 skipped" in proc.stdout
    journals = sorted(p.name for p in (out / ".nismooth").glob("*.jsonl"))
    # The 4 runs before the last as written, the last one's, and one folded file: not 7.
    assert len(journals) == 6 and journals[0] == "journal-0-folded.jsonl", journals
    # The first run's lines, which vouch for both outputs, are in the folded file only.
    for j in journals[1:]:
        (out / ".nismooth" / j).unlink()
    proc = nismooth("run", two, "-o", out, "--resume")
    assert "2 images (0 ok, 0 failed, 2 skipped)" in proc.stdout, proc.stdout


def test_a_journal_the_fold_cannot_read_is_kept(two, tmp_path):
    out = tmp_path / "out"
    nismooth("run", two, "-o", out, "--no-sync")
    # An old run's journal that cannot be read as a file (here a FIFO; on a cluster, another
    # user's or a stale NFS handle) is not folded, so it is not removed either.
    odd = out / ".nismooth" / "journal-1-1-rank0.jsonl"
    os.mkfifo(odd)
    for _ in range(6):
        nismooth("run", two, "-o", out, "--resume")
    assert odd.exists()
    assert (out / ".nismooth" / "journal-0-folded.jsonl").exists()
