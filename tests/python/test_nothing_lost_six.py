"""Nothing lost, round six (issue 36): the sixth hostile round got around
round five's guards; each way is a test that failed before its fix."""
import json
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from conftest import ROOT, nismooth, noise, save

STUDY = ROOT / "tests" / "data" / "studies" / "one-rep.json"


@pytest.fixture
def d(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    nib.save(nib.Nifti1Pair(noise((12, 13, 14), np.float32, 1), np.eye(4)), d / "p.hdr")
    save(d / "a.nii", noise((12, 13, 14), np.float32, 2))
    return d


def kept(*paths):
    return {p: p.read_bytes() for p in paths}


def test_an_input_named_by_its_img_keeps_its_hdr(d, tmp_path):
    before = kept(d / "p.hdr")
    nismooth("run", d / "p.img", "-o", tmp_path / "o", "--report", d / "p.hdr", expect=2)
    nismooth("sbatch", "--model", "array", "--write", d / "p.hdr", "--", d / "p.img", "-o", tmp_path / "o",
             expect=2)
    nismooth("estimate", "--from", STUDY, "--tasks", "4", "--json", d / "p.hdr", "--no-check-inputs", "--",
             d / "p.img", "-o", tmp_path / "o", expect=2)
    assert kept(d / "p.hdr") == before


def test_an_estimate_guards_what_exists_here_under_no_check_inputs(d, tmp_path):
    lst = tmp_path / "L"
    lst.write_text(f"{d / 'a.nii'}\n")
    before = kept(d / "a.nii", lst)
    for extra in (["--json", d / "a.nii", "--no-check-inputs", "--", d, "-o", tmp_path / "o"],
                  ["--sbatch", d / "a.nii", "--no-check-inputs", "--", "--list", lst, "-o", tmp_path / "o"],
                  ["--json", d / "a.nii", "--list", lst]):
        proc = nismooth("estimate", "--from", STUDY, "--tasks", "1", *extra, expect=2)
        assert "refused" in proc.stderr, proc.stderr
    assert kept(d / "a.nii", lst) == before


def test_an_estimate_never_writes_over_what_its_study_holds(tmp_path):
    st = tmp_path / "st"
    (st / "data").mkdir(parents=True)
    study = json.loads(STUDY.read_text())
    image, report = st / "data" / "sub-0000_T1w.nii.gz", tmp_path / "run.json"
    save(image, noise((8, 8, 6), np.int16, 3))
    report.write_text("{}")
    study["points"][0]["report"] = str(report)
    (st / "study.json").write_text(json.dumps(study))
    before = kept(image, report)
    for target in (image, report):
        proc = nismooth("estimate", "--from", st / "study.json", "--tasks", "4", "--json", target, expect=2)
        assert "study" in proc.stderr, proc.stderr
    assert kept(image, report) == before
    # Beside study.json is where an estimate belongs.
    nismooth("estimate", "--from", st / "study.json", "--tasks", "4", "--json", st / "estimate.json")


def test_report_merge_never_writes_over_a_merged_runs_images(d, tmp_path):
    out = tmp_path / "o"
    nismooth("run", d / "a.nii", "-o", out, "--report", tmp_path / "r.json", "--progress", "none")
    before = kept(d / "a.nii", out / "a.nii")
    for target in (d / "a.nii", out / "a.nii"):
        proc = nismooth("report", "merge", tmp_path / "r.json", "-o", target, expect=2)
        assert "of a merged run" in proc.stderr, proc.stderr
    assert kept(d / "a.nii", out / "a.nii") == before


def test_generate_never_replaces_a_runs_smoothed_phantoms(tmp_path):
    g, o = tmp_path / "g", tmp_path / "o"
    nismooth("generate", "-o", g, "-n", "1", "--shape", "8,8,8", "--format", "nii")
    nismooth("run", g, "-o", o, "--sigma", "3", "--progress", "none")
    before = kept(o / "sub-0000_T1w.nii")
    nismooth("generate", "-o", o, "-n", "1", "--shape", "8,8,8", "--format", "nii", expect=2)
    assert kept(o / "sub-0000_T1w.nii") == before


def test_a_report_beside_a_derivative_inside_its_dataset_is_written(tmp_path):
    # BIDS's own layout, ds/derivatives/NAME: a report there was refused as "inside the BIDS dataset".
    raw = tmp_path / "raw"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    save(raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz", noise((8, 8, 6), np.int16, 4))
    deriv = raw / "derivatives" / "smooth"
    nismooth("bids", raw, deriv, "participant", "--report", deriv / "report.json")
    assert (deriv / "report.json").exists()
    nismooth("bids", raw, deriv, "participant", "--report", raw / "report.json", expect=2)


def test_one_signal_stops_a_run_held_in_planning_by_a_list_fifo(tmp_path):
    """A --list FIFO that no writer opens holds the run in open(), where the
    drain is never looked at: one SIGTERM did nothing. Now the run stops
    after the grace with exit 3 (what a requeueing script expects), having
    written nothing."""
    import os
    import signal
    import time

    from conftest import BIN

    fifo = tmp_path / "list"
    os.mkfifo(fifo)
    p = subprocess.Popen([str(BIN), "run", "--list", str(fifo), "-o", str(tmp_path / "o"), "--grace", "1"],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    p.send_signal(signal.SIGTERM)
    try:
        err = p.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("one SIGTERM did not stop a run held in planning")
    assert p.returncode == 3, err
    assert "still planning" in err and not (tmp_path / "o").exists()


def test_a_report_and_csv_named_in_other_bytes_than_utf8_are_written(d, tmp_path):
    """--report and --csv took text, so clap refused a file name that is
    not UTF-8 (every other path argument takes bytes)."""
    import os

    from conftest import BIN

    report, csv = os.fsencode(tmp_path) + b"/r\xff-%j.json", os.fsencode(tmp_path) + b"/c\xff.csv"
    r = subprocess.run([os.fsencode(BIN), b"run", os.fsencode(d / "a.nii"), b"-o", os.fsencode(tmp_path / "o"),
                        b"--report", report, b"--csv", csv], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(open(os.fsencode(tmp_path) + b"/r\xff-0.json", "rb").read())["summary"]["ok"] == 1
    assert open(csv, "rb").read().count(b"\n") == 2


def test_run_arguments_clap_refuses_are_said_on_one_line(d, tmp_path):
    """clap's message inside ours came out with its newlines escaped
    (`\\u{a}  --output <OUTPUT>\\u{a}\\u{a}Usage: …`)."""
    for cmd in (("estimate", "--from", STUDY, "--tasks", "4", "--", "bids", d, tmp_path / "o", "participant"),
                ("sbatch", "--model", "serial", "--", d)):
        err = nismooth(*cmd, expect=2).stderr
        assert "\\u{a}" not in err and err.count("\n") == 1, err
        assert "--output <OUTPUT> (see nismooth run --help)" in err, err
