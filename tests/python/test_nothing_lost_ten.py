"""Nothing lost, round ten (issue 36): what round nine left knowingly.
A study records its real folder and names its points' reports by it, so
an estimate from a copy of its study.json still guards them; a study
replaces its points' lists and logs, so a hard-linked snapshot keeps its
own. Each case failed before."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import BIN, nismooth, noise, save


@pytest.fixture
def studied(tmp_path):
    d = tmp_path / "ph"
    d.mkdir()
    for i in range(2):
        save(d / f"i{i}.nii", noise((8, 9, 10), np.float32, i))
    subprocess.run([str(BIN), "study", "-o", "S", "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--reps",
                    "1", "--data", "ph", "-q"], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def test_an_estimate_from_a_copy_of_study_json_guards_the_studys_reports_and_tables(studied):
    (studied / "elsewhere").mkdir()
    shutil.copy(studied / "S" / "study.json", studied / "elsewhere" / "study.json")
    report = next((studied / "S" / "runs").glob("*.json"))
    targets = [report, studied / "S" / "study.md"]
    before = {p: p.read_bytes() for p in targets}
    for t in targets:
        r = subprocess.run([str(BIN), "estimate", "--from", "study.json", "--tasks", "100", "--json", str(t)],
                           cwd=studied / "elsewhere", capture_output=True, text=True)
        assert r.returncode == 2, (t, r.stdout, r.stderr)
    assert {p: p.read_bytes() for p in targets} == before


def test_a_study_run_again_leaves_a_hard_linked_snapshot_as_it_was(studied):
    subprocess.run(["cp", "-al", "S", "snap"], cwd=studied, check=True)
    snap = {p: p.read_bytes() for p in (studied / "snap" / "runs").iterdir()}
    assert any(p.suffix == ".log" for p in snap) and any(p.suffix == ".list" for p in snap)
    os.rename(studied / "ph" / "i1.nii", studied / "ph" / "i9.nii")
    subprocess.run([str(BIN), "study", "-o", "S", "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--reps",
                    "1", "--data", "ph", "-q"], cwd=studied, check=True, capture_output=True)
    assert b"i9.nii" in (studied / "S" / "runs" / "r1-t1-n2-rep0.list").read_bytes()
    assert {p: p.read_bytes() for p in (studied / "snap" / "runs").iterdir()} == snap
