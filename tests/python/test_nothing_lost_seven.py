"""Nothing lost, round seven (issue 36): the seventh hostile round's ways
to lose data or write wrong output; each is a test that failed before its
fix (run with NISMOOTH_BIN set to a binary of before)."""
import json
import os
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import BIN, nismooth, noise, save


def kept(*paths):
    return {p: p.read_bytes() for p in paths}


def test_a_symlinked_subfolder_of_outdir_never_gives_two_inputs_one_file(tmp_path):
    for sub, seed in (("a", 1), ("b", 2)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        save(tmp_path / "data" / sub / "x.nii", noise((10, 11, 12), np.float32, seed))
    (tmp_path / "out" / "b").mkdir(parents=True)
    (tmp_path / "out" / "a").symlink_to("b")
    err = nismooth("run", "-r", tmp_path / "data", "-o", tmp_path / "out", expect=2).stderr
    assert "would both write" in err, err
    assert not (tmp_path / "out" / "b" / "x.nii").exists()


@pytest.fixture
def run_with_report(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    save(data / "x.nii", noise((10, 11, 12), np.float32, 3))
    subprocess.run([str(BIN), "run", "data", "-o", "out", "--report", "r.json"], cwd=tmp_path,
                   check=True, capture_output=True)
    return tmp_path


def test_report_merge_reads_a_runs_paths_from_the_folder_it_ran_in(run_with_report):
    t = run_with_report
    journal = next((t / "out" / ".nismooth").glob("journal*"))
    before = kept(t / "data" / "x.nii", journal)
    # Merged from elsewhere: the report's relative paths are the run's.
    nismooth("report", "merge", t / "r.json", "-o", t / "data" / "x.nii", expect=2)
    nismooth("report", "merge", t / "r.json", "-o", journal, expect=2)
    assert kept(t / "data" / "x.nii", journal) == before
    nismooth("report", "merge", t / "r.json", "-o", t / "merged.json")


def test_report_merge_never_writes_into_a_bids_runs_datasets(tmp_path):
    ds = tmp_path / "ds"
    for s in ("01", "02"):
        (ds / f"sub-{s}" / "anat").mkdir(parents=True)
        save(ds / f"sub-{s}" / "anat" / f"sub-{s}_T1w.nii.gz", noise((8, 9, 10), np.float32, int(s)))
        (ds / f"sub-{s}" / "anat" / f"sub-{s}_T1w.json").write_text('{"RepetitionTime": 2.3}')
    (ds / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.8.0"}')
    subprocess.run([str(BIN), "bids", "ds", "ds/derivatives/sm", "participant", "--fwhm", "6", "--report",
                    "run.json", "-q"], cwd=tmp_path, check=True, capture_output=True)
    raw = ds / "sub-01" / "anat" / "sub-01_T1w.json"
    side = ds / "derivatives" / "sm" / "sub-01" / "anat" / "sub-01_desc-smooth6mm_T1w.json"
    before = kept(raw, side)
    for target in (raw, side):
        nismooth("report", "merge", tmp_path / "run.json", "-o", target, expect=2)
    assert kept(raw, side) == before


def live_lock(outdir):
    """A lock as a live run holds it: this test process is its holder."""
    import socket

    stat = open("/proc/self/stat").read()
    ticks = int(stat[stat.rfind(")") + 1:].split()[19])
    (outdir / ".nismooth").mkdir(parents=True, exist_ok=True)
    (outdir / ".nismooth" / "lock").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "start_ticks": ticks, "since_unix": int(time.time()),
         "slurm_job": None}))


def test_nested_outdirs_refuse_each_others_live_run(tmp_path):
    """Each run locked its own OUTDIR only: a run into out/s beside a live
    run into out (or the other way round) went on, and its --resume removed
    the other's live temp files."""
    d = tmp_path / "d"
    (d / "s").mkdir(parents=True)
    save(d / "b.nii", noise((8, 9, 10), np.float32, 1))
    save(d / "s" / "m.nii", noise((8, 9, 10), np.float32, 2))
    outer = tmp_path / "outer"
    live_lock(outer)
    err = nismooth("run", d / "s", "-o", outer / "s", "--resume", expect=2).stderr
    assert "another nismooth run writes now" in err, err
    inner = tmp_path / "inner"
    live_lock(inner / "s")
    err = nismooth("run", "-r", d, "-o", inner, "--resume", expect=2).stderr
    assert "another nismooth run writes now" in err, err
    assert not (outer / "s" / "m.nii").exists() and not (inner / "b.nii").exists()


def test_a_job_script_is_never_written_over_an_output_in_a_subfolder(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    save(tmp_path / "data" / "a" / "x.nii", noise((8, 9, 10), np.float32, 4))
    nismooth("run", "-r", tmp_path / "data", "-o", tmp_path / "out")
    out = tmp_path / "out" / "a" / "x.nii"
    before = kept(out)
    nismooth("sbatch", "--model", "serial", "--write", out, "--", "-r", tmp_path / "data", "-o", tmp_path / "out",
             expect=2)
    assert kept(out) == before


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    st = tmp_path_factory.mktemp("st") / "st"
    nismooth("study", "-o", st, "--ranks", "1", "--threads", "1", "--tasks", "2,4", "--shape", "16,16,8",
             "--reps", "1", "-q")
    return st


def test_an_estimate_never_writes_over_its_studys_tables_and_charts(study):
    own = [study / n for n in ("study.md", "study.csv", "stages.svg")]
    before = kept(*own)
    for target in own:
        nismooth("estimate", "--from", study / "study.json", "--tasks", "4", "--no-check-inputs", "--json",
                 target, expect=2)
    assert kept(*own) == before


def test_a_study_refuses_links_and_fifos_at_its_own_names(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        save(data / f"i{i}.nii", noise((8, 9, 10), np.float32, i))
    before = kept(data / "i1.nii")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "study.md").symlink_to(data / "i1.nii")
    nismooth("study", "-o", linked, "--data", data, "--ranks", "1", "--threads", "1", "--tasks", "2", "--reps",
             "1", "-q", expect=2)
    assert kept(data / "i1.nii") == before
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "wall_vs_tasks.svg")
    r = subprocess.run([str(BIN), "study", "-o", str(fifo), "--ranks", "1", "--threads", "1", "--tasks", "2",
                        "--shape", "8,8,8", "--reps", "1", "-q"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr


@pytest.mark.parametrize("edit", [{"read_per_task_s": 1e308}, {"read_per_task_s": 1e300, "read_s": 1e300},
                                  {"write_per_task_s": -1.0}])
def test_an_estimate_refuses_stage_times_no_run_can_have(study, tmp_path, edit):
    s = json.loads((study / "study.json").read_text())
    for p in s["points"]:
        p.update(edit)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(s))
    err = nismooth("estimate", "--from", bad, "--tasks", "1000", "--no-check-inputs", expect=2).stderr
    assert "a time no run can have" in err, err


def test_outputs_of_a_tree_with_a_symlinked_subfolder_are_each_their_inputs(tmp_path):
    """What the refusal protects: without the link, each output is its own
    input's smoothing (scipy's bits)."""
    for sub, seed in (("a", 1), ("b", 2)):
        (tmp_path / "data" / sub).mkdir(parents=True)
        save(tmp_path / "data" / sub / "x.nii", noise((10, 11, 12), np.float32, seed))
    nismooth("run", "-r", tmp_path / "data", "-o", tmp_path / "out")
    for sub in ("a", "b"):
        want = ndimage.gaussian_filter(np.asanyarray(nib.load(tmp_path / "data" / sub / "x.nii").dataobj), 2)
        got = np.asanyarray(nib.load(tmp_path / "out" / sub / "x.nii").dataobj)
        assert np.array_equal(got, want)
