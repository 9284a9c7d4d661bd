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


def test_an_output_folder_that_holds_another_input_is_refused(tmp_path):
    """-r out/data -o out: out/data/data/T1's output would be input out/data/T1."""
    for rel in ["out/data/T1.nii.gz", "out/data/data/T1.nii.gz", "tree/sub/T1.nii.gz",
                "out/sub/T1.nii.gz"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        save(tmp_path / rel, noise((8, 8, 8), np.float32, len(rel)))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.nii.gz")}
    proc = nismooth("run", "-r", tmp_path / "out/data", "-o", tmp_path / "out", expect=2)
    assert "holds input" in proc.stderr
    # A tree and a file that sits where the tree's outputs go.
    proc = nismooth("run", "-r", tmp_path / "tree", tmp_path / "out/sub/T1.nii.gz",
                    "-o", tmp_path / "out", expect=2)
    assert "holds input" in proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.nii.gz")} == before


def test_outdir_inside_the_tree_is_refused_when_it_holds_images_of_its_own(tmp_path):
    data = tmp_path / "data"
    tree(data)
    (data / "link").symlink_to(data / "s1")
    before = {p: p.read_bytes() for p in data.rglob("*.nii*")}
    for outdir in [data / "s1", data / "link"]:
        proc = nismooth("run", "-r", data, "-o", outdir, expect=2)
        assert "holds input" in proc.stderr, proc.stderr
    assert {p: p.read_bytes() for p in data.rglob("*.nii*")} == before
    # nismooth's own OUTDIR inside the tree is skipped, run after run.
    (data / "link").unlink()
    nismooth("run", "-r", data, "-o", data / "smoothed")
    proc = nismooth("run", "-r", data, "-o", data / "smoothed", "--resume")
    assert "skipped" in proc.stderr and relative_files(data / "smoothed") == [
        "s1/anat/T1.nii.gz", "s2/anat/T1.nii.gz", "s2/func/bold.nii", "top.nii.gz"]


def test_resume_over_a_tree_skips_every_finished_output(tmp_path):
    """Outputs with equal names in different folders are different outputs."""
    data = tmp_path / "data"
    tree(data)
    out = tmp_path / "out"
    nismooth("run", "-r", data, "-o", out)
    proc = nismooth("run", "-r", data, "-o", out, "--resume", "--report", tmp_path / "r.json")
    import json
    statuses = [i["status"] for i in json.loads((tmp_path / "r.json").read_text())["images"]]
    assert statuses == ["skipped"] * 4, proc.stderr


def test_folder_names_that_are_not_utf8_are_mirrored_byte_for_byte(tmp_path):
    data = tmp_path / "data"
    for raw in [b"bad\xff", b"bad\xfe"]:
        d = os.path.join(os.fsencode(data), raw)
        os.makedirs(d)
        save(os.fsdecode(os.path.join(d, b"T1.nii.gz")), noise((6, 6, 6), np.int16, raw[-1]))
    out = tmp_path / "out"
    nismooth("run", "-r", data, "-o", out)
    assert sorted(os.listdir(os.fsencode(out))) == [b".nismooth", b"bad\xfe", b"bad\xff"]
