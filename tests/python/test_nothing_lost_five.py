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
