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


@pytest.fixture
def raw(tmp_path):
    for name in ("a.nii.gz", "sub1/a.nii.gz"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        save(tmp_path / "data" / name, noise((8, 9, 10), np.float32, len(name)))
    return tmp_path


def test_a_one_file_runs_state_never_lets_a_tree_run_over_a_folders_raw_images(raw):
    """A one-file run (-o DIR/x.nii.gz) makes DIR/.nismooth beside DIR's own
    images: a later -r run with OUTDIR DIR skipped DIR as its own output
    folder and wrote data/a.nii.gz's output over the raw data/sub1/a.nii.gz."""
    kept = (raw / "data" / "sub1" / "a.nii.gz").read_bytes()
    nismooth("run", "-r", raw / "data", "-o", raw / "data" / "sub1", expect=2)
    nismooth("run", raw / "data" / "sub1" / "a.nii.gz", "-o", raw / "data" / "sub1" / "a_s.nii.gz", "-q")
    r = nismooth("run", "-r", raw / "data", "-o", raw / "data" / "sub1", expect=2)
    assert "a.nii.gz" in r.stderr
    assert (raw / "data" / "sub1" / "a.nii.gz").read_bytes() == kept


def test_a_one_file_runs_state_never_makes_a_folder_a_bids_output(raw, tmp_path):
    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    save(ds / "sub-01" / "anat" / "sub-01_T1w.nii.gz", noise((8, 9, 10), np.float32, 3))
    notes = raw / "data" / "sub1"
    nismooth("run", notes / "a.nii.gz", "-o", notes / "a_s.nii.gz", "-q")
    r = nismooth("bids", ds, notes, "participant", expect=2)
    assert "no dataset_description.json" in r.stderr
    assert not (notes / "dataset_description.json").exists()


def merge(cwd, report, target):
    return subprocess.run([str(BIN), "report", "merge", str(report), "-o", str(target)], cwd=cwd,
                          capture_output=True, text=True)


def test_a_merge_guards_a_runs_files_after_its_folder_moved(raw):
    """A report names its run's paths relative to the folder the run started
    in; once that folder was moved, its --list and a BIDS run's datasets
    went unguarded."""
    a = raw / "A"
    a.mkdir()
    (a / "in").mkdir()
    for i in range(2):
        save(a / "in" / f"i{i}.nii.gz", noise((8, 9, 10), np.float32, i))
    (a / "list.txt").write_text("in/i0.nii.gz\nin/i1.nii.gz\n")
    (a / "logs").mkdir()
    subprocess.run([str(BIN), "run", "-q", "--list", "list.txt", "-o", "out", "--report", "logs/r.json"], cwd=a,
                   check=True, capture_output=True)
    assert merge(a, "logs/r.json", "list.txt").returncode == 2
    os.rename(a, raw / "B")
    b = raw / "B"
    before = (b / "list.txt").read_bytes()
    for cwd in (b, b / "logs", raw):
        assert merge(cwd, b / "logs" / "r.json", b / "list.txt").returncode == 2, cwd
    assert (b / "list.txt").read_bytes() == before


def test_a_merge_guards_a_bids_runs_datasets_after_their_folder_moved(raw):
    a = raw / "A"
    ds = a / "raw"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    (ds / "participants.tsv").write_text("participant_id\nsub-01\n")
    save(ds / "sub-01" / "anat" / "sub-01_T1w.nii.gz", noise((8, 9, 10), np.float32, 3))
    (ds / "sub-01" / "anat" / "sub-01_T1w.json").write_text('{"RepetitionTime": 2}')
    subprocess.run([str(BIN), "bids", "raw", "deriv", "participant", "--report", "b.json", "-q"], cwd=a,
                   check=True, capture_output=True)
    os.rename(a, raw / "B")
    b = raw / "B"
    targets = [b / "raw" / "sub-01" / "anat" / "sub-01_T1w.json", b / "raw" / "participants.tsv",
               b / "deriv" / "dataset_description.json"]
    before = {t: t.read_bytes() for t in targets}
    for t in targets:
        assert merge(b, "b.json", t).returncode == 2, t
    assert {t: t.read_bytes() for t in targets} == before


def test_a_lost_report_never_hides_failed_or_undone_images(raw, tmp_path):
    """Exit 4 (the work done, the report lost) came before the images' own
    outcome: a run with a failed image, or one stopped early, exited 4 and
    said its images were written (a requeuing job script, which requeues
    on 3, then left the rest undone)."""
    (raw / "data" / "bad.nii.gz").write_bytes(b"")
    os.mkfifo(tmp_path / "rep.fifo")
    r = nismooth("run", raw / "data", "-o", tmp_path / "o1", "--report", tmp_path / "rep.fifo", "-q", expect=1)
    assert "images themselves were written" not in r.stderr and "FIFO" in r.stderr
    r = nismooth("run", raw / "data" / "a.nii.gz", "-o", tmp_path / "o2", "--deadline", "0s",
                 "--report", tmp_path / "rep.fifo", "-q", expect=3)
    assert "stopped early" in r.stderr and "images themselves were written" not in r.stderr
    (raw / "data" / "bad.nii.gz").unlink()
    r = nismooth("run", raw / "data", "-o", tmp_path / "o3", "--report", tmp_path / "rep.fifo", "-q", expect=4)
    assert "images themselves were written" in r.stderr


def test_report_merge_refuses_journals_of_other_kernels(tmp_path):
    """Round twelve: a merge of reports of different kernels was refused,
    but journals (a run's, or a folded one holding several runs) merged
    with exit 0 and the first report's sigma stamped on every image."""
    for i in range(2):
        save(tmp_path / f"i{i}.nii.gz", noise((8, 9, 10), np.float32, i))
    (tmp_path / "G").mkdir()
    for i, sigma in ((0, "3"), (1, "4")):
        nismooth("run", tmp_path / f"i{i}.nii.gz", "-o", tmp_path / "G" / f"o{i}.nii.gz", "--sigma", sigma,
                 "--report", tmp_path / f"r{i}.json", "-q")
    journals = sorted((tmp_path / "G" / ".nismooth").glob("journal-*.jsonl"))
    assert len(journals) == 2
    for inputs in ([tmp_path / "r0.json", tmp_path / "r1.json"], journals,
                   [tmp_path / "r0.json", journals[1]], [journals[0], tmp_path / "r1.json"]):
        r = nismooth("report", "merge", *inputs, "-o", tmp_path / "m.json", expect=2)
        assert "sigma" in r.stderr, r.stderr
    folded = tmp_path / "G" / ".nismooth" / "journal-0-folded.jsonl"
    folded.write_text("".join(j.read_text() for j in journals))
    r = nismooth("report", "merge", folded, "-o", tmp_path / "m.json", expect=2)
    assert "holds runs made with different settings" in r.stderr
    assert not (tmp_path / "m.json").exists()
    nismooth("report", "merge", journals[0], "-o", tmp_path / "m.json", "-q")
