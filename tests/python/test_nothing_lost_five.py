"""Nothing lost, round five (issue 36): each finding of the fifth hostile
round as a test that failed before its fix. What a report, a CSV, a job
script or an estimate may land on (plan::Guard): never a pair's voxel file,
the list a run reads, a raw BIDS dataset, the derivative's own files, the
study an estimate reads."""
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, ROOT, nismooth, noise, save

STUDY = ROOT / "tests" / "data" / "studies" / "one-rep.json"


@pytest.fixture
def pair(tmp_path):
    nib.save(nib.Nifti1Pair(noise((10, 9, 8), np.float32, 1), np.eye(4)), tmp_path / "x.hdr")
    return tmp_path / "x.hdr"


@pytest.mark.parametrize("flag", ["--report", "--csv"])
def test_a_report_never_lands_on_a_pairs_voxel_file(pair, tmp_path, flag):
    img = pair.with_suffix(".img")
    before = img.read_bytes()
    proc = nismooth("run", pair, "-o", tmp_path / "out", flag, img, expect=2)
    assert "it is input" in proc.stderr and img.read_bytes() == before
    proc = nismooth("run", tmp_path, "-o", tmp_path / "out", flag, img, expect=2)
    assert img.read_bytes() == before


def test_a_script_never_lands_on_a_pairs_voxel_file(pair, tmp_path):
    img = pair.with_suffix(".img")
    before = img.read_bytes()
    nismooth("sbatch", "--model", "serial", "--write", img, "--", pair, "-o", tmp_path / "out", expect=2)
    assert img.read_bytes() == before


@pytest.fixture
def listed(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        save(d / f"sub-{i:02d}_T1w.nii.gz", noise((12, 10, 8), np.int16, i))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p}\n" for p in sorted(d.iterdir())))
    return lst


def test_the_list_a_run_reads_is_no_report_or_script(listed, tmp_path):
    before = listed.read_bytes()
    for flag in ("--report", "--csv"):
        proc = nismooth("run", "--list", listed, "-o", tmp_path / "out", flag, listed, expect=2)
        assert "--list" in proc.stderr
    nismooth("sbatch", "--model", "serial", "--write", listed, "--", "--list", listed, "-o", tmp_path / "o", expect=2)
    assert listed.read_bytes() == before


def test_an_estimate_writes_over_no_input_study_list_or_itself(listed, tmp_path):
    study = tmp_path / "study.json"
    shutil.copy(STUDY, study)
    image = sorted((tmp_path / "in").iterdir())[0]
    keep = {p: p.read_bytes() for p in (study, listed, image)}
    cases = [
        ["--sbatch", image, "--", image, "-o", tmp_path / "out"],
        ["--json", image, "--", image, "-o", tmp_path / "out"],
        ["--json", study],
        ["--json", listed, "--list", listed],
        ["--json", tmp_path / "a.json", "--sbatch", tmp_path / "a.json", "--", tmp_path / "in", "-o", tmp_path / "o"],
    ]
    for extra in cases:
        proc = nismooth("estimate", "--from", study, "--tasks", "2", *extra, expect=2)
        assert "refused" in proc.stderr or "one file" in proc.stderr, (extra, proc.stderr)
    assert {p: p.read_bytes() for p in keep} == keep
    assert not (tmp_path / "a.json").exists()


@pytest.fixture
def raw(tmp_path):
    d = tmp_path / "raw"
    (d / "sub-01" / "anat").mkdir(parents=True)
    (d / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    (d / "T1w.json").write_text('{"RepetitionTime": 2}')
    save(d / "sub-01" / "anat" / "sub-01_T1w.nii.gz", noise((12, 10, 8), np.int16, 3))
    return d


def tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def test_no_report_or_script_lands_in_a_raw_dataset(raw, tmp_path):
    before = tree(raw)
    for target in ("T1w.json", "dataset_description.json", "README"):
        proc = nismooth("bids", raw, tmp_path / "deriv", "participant", "--report", raw / target, expect=2)
        assert "BIDS dataset" in proc.stderr
        nismooth("sbatch", "--model", "array", "--write", raw / target, "--", "bids", raw, tmp_path / "d2",
                 "participant", expect=2)
    assert tree(raw) == before


def test_no_report_replaces_the_derivatives_own_files(raw, tmp_path):
    deriv = tmp_path / "deriv"
    nismooth("bids", raw, deriv, "participant")
    before = tree(deriv)
    sidecar = next(deriv.rglob("sub-01_*.json"))
    for target in (sidecar, deriv / "dataset_description.json"):
        proc = nismooth("bids", raw, deriv, "participant", "--report", target, expect=2)
        assert "derivative dataset" in proc.stderr
    assert {k: v for k, v in tree(deriv).items() if not k.startswith(".nismooth")} == \
        {k: v for k, v in before.items() if not k.startswith(".nismooth")}
    # A report beside them is fine, and the next run is not refused.
    nismooth("bids", raw, deriv, "participant", "--report", deriv / "nismooth-report.json")


@pytest.mark.parametrize("kind", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("how", [["--fwhm", "6"], ["--sigma", "2", "--units", "mm"]])
def test_mm_kernels_use_the_voxel_sizes_nibabel_gives(tmp_path, kind, how):
    # NIfTI-2 stores pixdim as float64: 0.7 is 0.7, not float32's 0.699999988 (before, 634 of
    # 1320 voxels differed from scipy with nibabel's zooms).
    from scipy import ndimage
    data = np.random.default_rng(1).standard_normal((12, 11, 10)).astype(np.float32)
    img = kind(data, np.diag([0.7, 1.1, 1.3, 1]))
    nib.save(img, tmp_path / "n.nii")
    nismooth("run", tmp_path / "n.nii", "-o", tmp_path / "out", *how, "--progress", "none")
    zooms = np.float64(nib.load(tmp_path / "n.nii").header.get_zooms()[:3])
    sigma = 6 / (np.sqrt(8 * np.log(2)) * zooms) if how[0] == "--fwhm" else 2 / zooms
    want = ndimage.gaussian_filter(data, sigma)
    got = np.asanyarray(nib.load(tmp_path / "out" / "n.nii").dataobj)
    assert np.array_equal(got, want)


def test_nan_into_uint64_is_what_numpys_cast_gives():
    # NaN cast to uint64 is 2**63 on x86-64 (the C cast's signed path); before, 0.
    import nismooth
    from scipy import ndimage
    a = np.zeros((3, 3, 3))
    a[1, 1, 1] = np.nan
    assert np.array_equal(nismooth.gaussian_filter(a, 1.0, output=np.uint64),
                          ndimage.gaussian_filter(a, 1.0, output=np.uint64))
    u = np.arange(60, dtype=np.uint64).reshape(3, 4, 5)
    assert np.array_equal(nismooth.gaussian_filter(u, 1.0, mode="constant", cval=np.nan),
                          ndimage.gaussian_filter(u, 1.0, mode="constant", cval=np.nan))


def test_names_that_are_not_utf8_are_paths_not_a_panic(tmp_path):
    # Before: `std::env::args()` panicked (exit 101) on such an argument; the wheel's command
    # raised UnicodeEncodeError (exit 1, "an image failed").
    import os
    src = os.fsencode(str(tmp_path)) + b"/b\xffd.nii.gz"
    save(Path(os.fsdecode(src)), noise((8, 8, 6), np.int16, 4))
    out = os.fsencode(str(tmp_path)) + b"/out\xff"
    for cmd in ([os.fsencode(str(BIN))], [os.fsencode(shutil.which("nismooth") or str(BIN))]):
        proc = subprocess.run([*cmd, b"run", src, b"-o", out, b"--progress", b"none"], capture_output=True)
        assert proc.returncode == 0, proc.stderr
        assert os.path.exists(out + b"/b\xffd.nii.gz")
        shutil.rmtree(out)
    proc = subprocess.run([os.fsencode(str(BIN)), b"bids", out, b"o", b"participant"], capture_output=True)
    assert proc.returncode == 2 and b"does not exist" in proc.stderr, proc.stderr


def test_generate_replaces_only_its_own_phantoms(tmp_path):
    g = tmp_path / "g"
    g.mkdir()
    mine = g / "sub-0001_T1w.nii.gz"
    save(mine, noise((8, 8, 6), np.int16, 5))
    before = mine.read_bytes()
    proc = nismooth("generate", "-o", g, "-n", "3", "--shape", "8,8,8", expect=2)
    assert "not a nismooth phantom" in proc.stderr and mine.read_bytes() == before
    assert sorted(p.name for p in g.iterdir()) == ["sub-0001_T1w.nii.gz"], "nothing written before the refusal"
    mine.unlink()
    for _ in range(2):  # phantoms over phantoms: the same again
        nismooth("generate", "-o", g, "-n", "3", "--shape", "8,8,8")
    assert len(list(g.iterdir())) == 3


def test_a_long_legal_name_is_written(tmp_path):
    # 237 bytes: legal, but its temp name (and its one-file lock) passed 255 bytes before.
    d = tmp_path / "in"
    d.mkdir()
    name = "a" * 230 + ".nii.gz"
    save(d / name, noise((8, 8, 6), np.int16, 6))
    nismooth("run", d, "-o", tmp_path / "o1", "--progress", "none")
    (tmp_path / "o2").mkdir()
    nismooth("run", d / name, "-o", tmp_path / "o2" / name, "--progress", "none")
    for o in ("o1", "o2"):
        assert (tmp_path / o / name).read_bytes() == (tmp_path / "o1" / name).read_bytes()
        assert not [p for p in (tmp_path / o).iterdir() if p.name.endswith(".tmp")]


def test_one_bids_image_twice_is_refused(raw, tmp_path):
    anat = raw / "sub-01" / "anat"
    shutil.copy(anat / "sub-01_T1w.nii.gz", tmp_path / "t.nii.gz")
    nib.save(nib.load(tmp_path / "t.nii.gz"), anat / "sub-01_T1w.nii")
    proc = nismooth("bids", raw, tmp_path / "d", "participant", expect=2)
    assert "one image twice" in proc.stderr and not (tmp_path / "d").exists()


def test_a_derivative_of_another_dataset_is_refused_and_fields_are_kept(raw, tmp_path):
    import json
    deriv = tmp_path / "deriv"
    deriv.mkdir()
    desc = {"Name": "prep", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
            "DatasetLinks": {"raw": "/data/otherRaw"}}
    (deriv / "dataset_description.json").write_text(json.dumps(desc))
    proc = nismooth("bids", raw, deriv, "participant", expect=2)
    assert "DatasetLinks" in proc.stderr and "/data/otherRaw" in proc.stderr
    # fMRIPrep's GeneratedBy as one object, SourceDatasets as a string: kept, as the first entries.
    prep = {"Name": "fMRIPrep", "Version": "23.1"}
    desc = {"Name": "prep", "BIDSVersion": "1.8.0", "DatasetType": "derivative", "GeneratedBy": prep,
            "SourceDatasets": "bids::raw"}
    (deriv / "dataset_description.json").write_text(json.dumps(desc))
    nismooth("bids", raw, deriv, "participant")
    now = json.loads((deriv / "dataset_description.json").read_text())
    assert now["GeneratedBy"][0] == prep and now["GeneratedBy"][1]["Name"] == "nismooth"
    assert now["SourceDatasets"][0] == "bids::raw"


@pytest.mark.parametrize("compat", [[], ["--compat", "nilearn"]])
def test_zero_and_negative_voxel_sizes_are_read_as_nibabel_loads_them(tmp_path, compat):
    # No sform or qform, pixdim 0, 2, -3: nibabel loads 1, 2, 3 (and nilearn smooths with
    # them); before, the image failed with "voxel size … is 0".
    from scipy import ndimage
    data = noise((8, 9, 10), np.float32, 7)
    img = nib.Nifti1Image(data, None)
    img.header["pixdim"][1:4] = [0, 2, -3]
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, tmp_path / "z.nii")
    nismooth("run", tmp_path / "z.nii", "-o", tmp_path / "out", "--fwhm", "6", "--progress", "none", *compat)
    got = np.asanyarray(nib.load(tmp_path / "out" / "z.nii").dataobj)
    loaded = nib.load(tmp_path / "z.nii")
    if compat:
        from nilearn.image import smooth_img
        want = np.asanyarray(smooth_img(loaded, 6).dataobj)
    else:
        zooms = np.float64(loaded.header.get_zooms()[:3])
        want = ndimage.gaussian_filter(data, 6 / (np.sqrt(8 * np.log(2)) * zooms))
    assert np.array_equal(got, want)


def test_a_study_of_a_folder_whose_name_is_not_utf8_runs(tmp_path):
    # Before, the points' lists named U+FFFD for the byte and every point FAILED.
    import os
    data = os.fsencode(str(tmp_path)) + b"/dat\xff"
    os.mkdir(data)
    for i in range(2):
        save(Path(os.fsdecode(data + f"/sub-{i}_T1w.nii.gz".encode())), noise((8, 8, 6), np.int16, i))
    proc = subprocess.run([os.fsencode(str(BIN)), b"study", b"--ranks", b"1", b"--threads", b"1", b"--tasks", b"1,2",
                           b"--reps", b"1", b"--launcher", b"none", b"--data", data, b"-o",
                           os.fsencode(str(tmp_path / "st"))], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "st" / "study.md").exists()


def test_a_list_saved_with_a_byte_order_mark_is_read(listed, tmp_path):
    # Before: the BOM became part of the first path, "does not exist" for a file that does.
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + listed.read_bytes())
    proc = nismooth("run", "--list", bom, "-o", tmp_path / "out", "--progress", "none")
    assert "2 images (2 ok" in proc.stdout


def test_a_long_desc_says_where_it_came_from(raw, tmp_path):
    proc = nismooth("bids", raw, tmp_path / "d", "participant", "--desc", "a" * 60, expect=2)
    assert "(from --desc)" in proc.stderr and "at most 40" in proc.stderr, proc.stderr
