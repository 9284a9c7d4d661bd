"""Nothing lost, round eight (issue 36): the eighth hostile round's ways
round the seventh's guards; each is a test that failed before its fix."""
import os
import subprocess

import numpy as np
import pytest

from conftest import BIN, nismooth, noise, save


@pytest.fixture
def ph(tmp_path):
    d = tmp_path / "ph"
    d.mkdir()
    for i in range(2):
        save(d / f"i{i}.nii", noise((8, 9, 10), np.float32, i))
    return d


def study(out, data, *more, expect=0):
    return nismooth("study", "-o", out, "--ranks", "1", "--threads", "1", "--tasks", "2", "--reps", "1",
                    "--data", data, "-q", *more, expect=expect)


def test_a_study_never_writes_through_a_link_in_its_runs_folder(ph, tmp_path):
    keep = tmp_path / "keep.txt"
    keep.write_text("PRECIOUS")
    (tmp_path / "S" / "runs").mkdir(parents=True)
    (tmp_path / "S" / "runs" / "r1-t1-n2-rep0.list").symlink_to(keep)
    study(tmp_path / "S", ph, expect=2)
    assert keep.read_text() == "PRECIOUS"


def test_a_study_never_empties_a_folder_its_work_link_names(ph, tmp_path):
    (tmp_path / "prec" / "r1-t1-n2-rep0").mkdir(parents=True)
    (tmp_path / "prec" / "r1-t1-n2-rep0" / "keep.txt").write_text("P")
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "work").symlink_to(tmp_path / "prec")
    study(tmp_path / "S", ph, expect=2)
    assert (tmp_path / "prec" / "r1-t1-n2-rep0" / "keep.txt").exists()


def test_a_studys_data_inside_its_work_folder_is_refused(ph, tmp_path):
    w = tmp_path / "S" / "work" / "r1-t1-n2-rep0"
    w.mkdir(parents=True)
    for f in ph.iterdir():
        (w / f.name).write_bytes(f.read_bytes())
    study(tmp_path / "S", w, expect=2)
    assert len(list(w.iterdir())) == 2


def test_an_estimate_from_a_linked_study_guards_the_real_studys_files(ph, tmp_path):
    nismooth("study", "-o", tmp_path / "S", "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--reps", "1",
             "--data", ph, "-q")
    (tmp_path / "L.json").symlink_to(tmp_path / "S" / "study.json")
    md = tmp_path / "S" / "study.md"
    before = md.read_bytes()
    nismooth("estimate", "--from", tmp_path / "L.json", "--tasks", "100", "--json", md, expect=2)
    assert md.read_bytes() == before


def test_report_merge_never_writes_over_a_merged_runs_list(ph, tmp_path):
    lst = tmp_path / "lst.txt"
    lst.write_text("".join(f"{p}\n" for p in sorted(ph.iterdir())))
    before = lst.read_bytes()
    nismooth("run", "--list", lst, "-o", tmp_path / "o", "--report", tmp_path / "A.json")
    nismooth("report", "merge", tmp_path / "A.json", "-o", lst, expect=2)
    assert lst.read_bytes() == before


def test_generate_never_replaces_outputs_in_a_tree_runs_subfolder(tmp_path):
    nismooth("generate", "-o", tmp_path / "t" / "grp", "-n", "2", "--shape", "16,16,10")
    nismooth("run", "-r", tmp_path / "t", "-o", tmp_path / "out")
    outs = sorted((tmp_path / "out" / "grp").glob("*.nii.gz"))
    before = {p: p.read_bytes() for p in outs}
    nismooth("generate", "-o", tmp_path / "out" / "grp", "-n", "2", "--shape", "16,16,10", expect=2)
    assert {p: p.read_bytes() for p in outs} == before


def test_a_merged_report_merged_again_keeps_its_runs_guards(ph, tmp_path):
    """A merged report's command was `report merge …` and it kept the first
    run's OUTDIR only: merged again, a raw BIDS sidecar, the derivative's
    description and the second run's journal were written over."""
    ds = tmp_path / "ds"
    (ds / "sub-01" / "anat").mkdir(parents=True)
    (ds / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.8.0"}')
    save(ds / "sub-01" / "anat" / "sub-01_T1w.nii.gz", noise((8, 9, 10), np.float32, 5))
    raw = ds / "sub-01" / "anat" / "sub-01_T1w.json"
    raw.write_text('{"RAW": 1}')
    subprocess.run([str(BIN), "bids", "ds", "ds/derivatives/sm", "participant", "--fwhm", "4", "--report", "b.json",
                    "-q"], cwd=tmp_path, check=True, capture_output=True)
    nismooth("run", ph / "i0.nii", "-o", tmp_path / "oA", "--report", tmp_path / "a.json")
    nismooth("run", ph / "i1.nii", "-o", tmp_path / "oB", "--report", tmp_path / "bb.json")
    nismooth("report", "merge", tmp_path / "b.json", "-o", tmp_path / "m.json")
    nismooth("report", "merge", tmp_path / "a.json", tmp_path / "bb.json", "-o", tmp_path / "m2.json")
    journal = next((tmp_path / "oB" / ".nismooth").glob("journal*"))
    desc = ds / "derivatives" / "sm" / "dataset_description.json"
    before = {p: p.read_bytes() for p in (raw, desc, journal)}
    nismooth("report", "merge", tmp_path / "m.json", "-o", raw, expect=2)
    nismooth("report", "merge", tmp_path / "m.json", "-o", desc, expect=2)
    nismooth("report", "merge", tmp_path / "m2.json", "-o", journal, expect=2)
    assert {p: p.read_bytes() for p in (raw, desc, journal)} == before
    nismooth("report", "merge", tmp_path / "m2.json", "-o", tmp_path / "m3.json")


def test_an_estimate_for_more_cores_than_any_cluster_is_refused():
    """--nodes × --ntasks-per-node wrapped to 0 ranks: a one-minute request."""
    from conftest import ROOT

    err = nismooth("estimate", "--from", ROOT / "tests" / "data" / "studies" / "one-rep.json", "--tasks", "10",
                   "--nodes", 2 ** 32, "--ntasks-per-node", 2 ** 32, expect=2).stderr
    assert "beyond any cluster" in err, err
