"""Nothing lost, round nine (issue 36): reports whose paths cannot be
placed (a journal, a report without `cwd`, a merge from another folder)
got round the guards; a report, CSV, script or estimate is now never
written to a NIfTI name nor into a run's .nismooth folder, whatever the
job. Each case failed before."""
import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import BIN, nismooth, noise, save


@pytest.fixture
def ran(tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(2):
        save(tmp_path / "data" / f"i{i}.nii", noise((8, 9, 10), np.float32, i))
    nib.save(nib.Nifti1Pair(noise((8, 9, 10), np.float32, 7), np.eye(4)), tmp_path / "data" / "p.img")
    subprocess.run([str(BIN), "run", "data", "-o", "out", "--report", "r.json", "-q"], cwd=tmp_path, check=True,
                   capture_output=True)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def merge(cwd, report, target):
    return subprocess.run([str(BIN), "report", "merge", str(report), "-o", str(target)], cwd=cwd,
                          capture_output=True, text=True)


def test_a_merge_of_a_journal_never_writes_into_its_run(ran):
    journal = next((ran / "out" / ".nismooth").glob("journal*"))
    out = ran / "out" / "i0.nii"
    before = {p: p.read_bytes() for p in (journal, out)}
    assert merge(ran / "elsewhere", journal, out).returncode == 2
    assert merge(ran, journal, ran / "out" / ".nismooth" / "lock").returncode == 2
    assert merge(ran, journal, ran / "out" / ".nismooth" / "journal-x.jsonl").returncode == 2
    assert {p: p.read_bytes() for p in (journal, out)} == before
    assert not (ran / "out" / ".nismooth" / "lock").exists()


def test_a_merge_from_elsewhere_or_of_an_old_report_never_writes_over_images(ran):
    old = json.loads((ran / "r.json").read_text())
    del old["cwd"]
    (ran / "old.json").write_text(json.dumps(old))
    targets = [ran / "data" / "p.img", ran / "data" / "p.hdr", ran / "out" / "i1.nii"]
    before = {p: p.read_bytes() for p in targets}
    for report in (ran / "r.json", ran / "old.json"):
        for t in targets:
            assert merge(ran / "elsewhere", report, t).returncode == 2, t
    assert {p: p.read_bytes() for p in targets} == before


def test_a_runs_report_and_csv_never_go_into_another_runs_state_or_images(ran):
    journal = next((ran / "out" / ".nismooth").glob("journal*"))
    before = {p: p.read_bytes() for p in (journal, ran / "out" / "i0.nii")}
    nismooth("run", ran / "data" / "i0.nii", "-o", ran / "out2", "--report", journal, expect=2)
    nismooth("run", ran / "data" / "i0.nii", "-o", ran / "out2", "--csv", ran / "out" / "i0.nii", expect=2)
    nismooth("run", ran / "data" / "i0.nii", "-o", ran / "out2", "--report", ran / "out" / ".nismooth" / "lock",
             expect=2)
    assert {p: p.read_bytes() for p in (journal, ran / "out" / "i0.nii")} == before


def test_an_estimate_never_writes_over_an_image_its_study_measured(ran):
    st = ran / "st"
    nismooth("study", "-o", st, "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--reps", "1", "--data",
             ran / "data" / "i0.nii", ran / "data" / "i1.nii", "-q")
    img = ran / "data" / "i0.nii"
    before = img.read_bytes()
    nismooth("estimate", "--from", st / "study.json", "--tasks", "4", "--json", img, expect=2)
    assert img.read_bytes() == before
