"""Naming inputs: trees (-r), lists (--list FILE and --list -), missing files."""
import os
import subprocess

import numpy as np
import nibabel as nib
from scipy import ndimage

from conftest import BIN, nismooth, noise, save


def tree(root):
    """A study's tree with equal names in different folders, and what -r must skip."""
    files = {
        "s1/anat/T1.nii.gz": (np.int16, 1),
        "s2/anat/T1.nii.gz": (np.int16, 2),
        "s2/func/bold.nii": (np.float32, 3),
        "top.nii.gz": (np.float32, 4),
        ".hidden/x.nii.gz": (np.int16, 5),
        "derivatives/old/T1.nii.gz": (np.int16, 6),
    }
    for rel, (dtype, seed) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        save(p, noise((10, 9, 8), dtype, seed))
    (root / "s1" / "anat" / "notes.txt").write_text("not an image")
    return files


def relative_files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if p.is_file() and ".nismooth" not in p.parts)


def test_recursive_mirrors_the_tree_and_skips_hidden_and_derivatives(tmp_path):
    data = tmp_path / "data"
    tree(data)
    out = data / "derivatives" / "smoothed"  # OUTDIR inside the tree: skipped too
    proc = nismooth("run", "-r", data, "-o", out)
    assert relative_files(out) == ["s1/anat/T1.nii.gz", "s2/anat/T1.nii.gz",
                                    "s2/func/bold.nii", "top.nii.gz"]
    assert ".hidden: hidden" in proc.stderr and "a derivatives folder" in proc.stderr, proc.stderr
    for rel in ["s1/anat/T1.nii.gz", "s2/anat/T1.nii.gz"]:
        src = np.asanyarray(nib.load(str(data / rel)).dataobj)
        got = np.asanyarray(nib.load(str(out / rel)).dataobj)
        assert np.array_equal(got, ndimage.gaussian_filter(src, 2)), rel
    # A second run with -r over the same tree does not take its own outputs as inputs.
    nismooth("run", "-r", data, "-o", out, "--resume")


def test_without_recursive_subfolders_are_named_in_the_log(tmp_path):
    data = tmp_path / "data"
    tree(data)
    proc = nismooth("run", data, "-o", tmp_path / "out")
    assert relative_files(tmp_path / "out") == ["top.nii.gz"]
    assert "subfolder(s) not searched (-r/--recursive" in proc.stderr


def test_a_tree_written_over_itself_is_refused(tmp_path):
    """-r data -o data would write each s*/anat/T1 over itself."""
    data = tmp_path / "data"
    tree(data)
    before = {p: p.read_bytes() for p in data.rglob("*.nii*")}
    proc = nismooth("run", "-r", data, "-o", data, expect=2)
    assert "holds input" in proc.stderr
    assert {p: p.read_bytes() for p in data.rglob("*.nii*")} == before


def test_list_from_standard_input_relative_to_the_working_directory(tmp_path):
    data = tmp_path / "data"
    tree(data)
    listing = "# two images\ndata/s1/anat/T1.nii.gz\ndata/top.nii.gz\n"
    proc = subprocess.run([str(BIN), "run", "--list", "-", "-o", "out"], input=listing,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert relative_files(tmp_path / "out") == ["T1.nii.gz", "top.nii.gz"]


def test_list_file_in_another_folder_reads_paths_against_the_working_directory(tmp_path):
    data = tmp_path / "data"
    tree(data)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "l.txt").write_text("data/top.nii.gz\n")
    proc = subprocess.run([str(BIN), "run", "--list", "lists/l.txt", "-o", "out"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert relative_files(tmp_path / "out") == ["top.nii.gz"]


def test_missing_command_line_input_is_refused_before_any_work(tmp_path):
    data = tmp_path / "data"
    tree(data)
    out = tmp_path / "out"
    proc = nismooth("run", data / "top.nii.gz", data / "typo.nii.gz", "-o", out, expect=2)
    assert "typo.nii.gz does not exist" in proc.stderr
    assert not out.exists()


def test_missing_files_in_a_list_are_named_first_and_fail_alone(tmp_path):
    data = tmp_path / "data"
    tree(data)
    listed = [data / "top.nii.gz", data / "gone1.nii.gz", data / "s1/anat/T1.nii.gz", data / "gone2.nii"]
    (tmp_path / "l.txt").write_text("\n".join(map(str, listed)) + "\n")
    out = tmp_path / "out"
    proc = nismooth("run", "--list", tmp_path / "l.txt", "-o", out, "--report", tmp_path / "r.json",
                    expect=1)
    first = proc.stderr.index("2 of 4 image(s)")
    assert "gone1.nii.gz" in proc.stderr[first:first + 400] and "gone2.nii" in proc.stderr[first:]
    assert relative_files(out) == ["T1.nii.gz", "top.nii.gz"]
    import json
    statuses = [i["status"] for i in json.loads((tmp_path / "r.json").read_text())["images"]]
    assert sorted(statuses) == ["failed", "failed", "ok", "ok"]


def test_recursive_under_mpi_two_ranks(tmp_path):
    data = tmp_path / "data"
    tree(data)
    out = tmp_path / "out"
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    proc = subprocess.run(["mpirun", "-n", "2", str(BIN), "run", "-r", str(data), "-o", str(out),
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert relative_files(out) == ["s1/anat/T1.nii.gz", "s2/anat/T1.nii.gz",
                                   "s2/func/bold.nii", "top.nii.gz"]
