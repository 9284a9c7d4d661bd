"""Nothing lost, round three (issue 36): each reproducer of the hostile round
as a test. Report targets that are devices, FIFOs or links; BIDS outputs
that stay inside their folder and never overwrite a raw dataset or another
kernel; merged reports of one kernel; bounded threads; signals that bite
inside a long filter; progress that does not count what a drain left; and
what a terminal or sacct is handed."""
import json
import os
import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, ROOT, nismooth, noise, save

ROOT_USER = os.geteuid() == 0


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        save(d / f"img{i}.nii.gz", noise((12, 10, 8), np.int16, i))
    return d


def run(inputs, out, *extra, expect=0, **kw):
    return nismooth("run", inputs, "-o", out, "--progress", "none", *extra, expect=expect, **kw)


# 1. Report and CSV targets ---------------------------------------------------

@pytest.mark.skipif(not ROOT_USER, reason="mknod needs root")
def test_a_device_as_report_and_csv_stays_a_device(inputs, tmp_path):
    for name in ("null2", "null3", "null4"):
        os.mknod(tmp_path / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    run(inputs, tmp_path / "o", "--report", tmp_path / "null2", "--csv", tmp_path / "null3")
    for name in ("null2", "null3"):
        assert stat.S_ISCHR(os.stat(tmp_path / name).st_mode), f"{name} became a regular file"


@pytest.mark.skipif(not ROOT_USER, reason="mknod needs root")
def test_report_merge_into_a_device_stays_a_device(inputs, tmp_path):
    run(inputs, tmp_path / "o", "--report", tmp_path / "r.json")
    os.mknod(tmp_path / "null4", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    nismooth("report", "merge", tmp_path / "r.json", "-o", tmp_path / "null4")
    assert stat.S_ISCHR(os.stat(tmp_path / "null4").st_mode)


def test_a_fifo_as_report_is_written_into(inputs, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    run(inputs, tmp_path / "o", "--report", fifo)
    reader.join(30)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(got[0])["summary"]["ok"] == 3


def test_a_link_to_a_report_keeps_the_link_and_replaces_its_file(inputs, tmp_path):
    target = tmp_path / "reports" / "real.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    run(inputs, tmp_path / "o", "--report", link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["summary"]["ok"] == 3


def test_dev_stdout_as_report_writes_to_standard_output(inputs, tmp_path):
    before = os.readlink("/dev/stdout") if os.path.islink("/dev/stdout") else None
    try:
        proc = run(inputs, tmp_path / "o", "--report", "/dev/stdout")
        assert '"schema"' in proc.stdout
        assert (os.readlink("/dev/stdout") if os.path.islink("/dev/stdout") else None) == before
    finally:
        if before is not None and not os.path.islink("/dev/stdout") and ROOT_USER:
            os.remove("/dev/stdout")
            os.symlink(before, "/dev/stdout")


@pytest.mark.parametrize("target", ["folder", ""])
def test_a_folder_or_nothing_as_report_is_refused_before_any_work(inputs, tmp_path, target):
    path = tmp_path / "rdir" if target == "folder" else ""
    if target == "folder":
        path.mkdir()
    proc = run(inputs, tmp_path / "o", "--report", path, expect=2)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.nii.gz"))
    # An empty name is refused by the parser (a path argument takes no empty value).
    why = "is a folder" if target == "folder" else "a value is required for '--report"
    assert proc.stderr.count(why) == 1, proc.stderr


# 6. report merge -------------------------------------------------------------

def test_merge_refuses_reports_of_other_kernels_and_matches_by_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, seed in ((a, 1), (b, 2)):
        d.mkdir()
        save(d / f"x{seed}.nii.gz", noise((8, 8, 8), np.float32, seed))
    (tmp_path / "la.txt").write_text(f"{a}/x1.nii.gz\n")
    (tmp_path / "lb.txt").write_text(f"{b}/x2.nii.gz\n")
    nismooth("run", "--list", tmp_path / "la.txt", "-o", tmp_path / "o", "--sigma", "1",
             "--progress", "none", "--report", tmp_path / "ra.json")
    nismooth("run", "--list", tmp_path / "lb.txt", "-o", tmp_path / "o2", "--sigma", "1",
             "--progress", "none", "--report", tmp_path / "rb.json")
    nismooth("run", "--list", tmp_path / "lb.txt", "-o", tmp_path / "o3", "--sigma", "7", "--mode", "wrap",
             "--progress", "none", "--report", tmp_path / "rc.json")
    nismooth("report", "merge", tmp_path / "ra.json", tmp_path / "rb.json", "-o", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["summary"]["tasks"] == 2
    proc = nismooth("report", "merge", tmp_path / "ra.json", tmp_path / "rc.json", "-o", tmp_path / "m2.json",
                    expect=2)
    assert "different settings" in proc.stderr and "sigma" in proc.stderr
    assert not (tmp_path / "m2.json").exists()
    r = json.loads((tmp_path / "ra.json").read_text())
    r["images"] = r["images"] * 2
    (tmp_path / "dup.json").write_text(json.dumps(r))
    proc = nismooth("report", "merge", tmp_path / "dup.json", "-o", tmp_path / "m3.json", expect=2)
    assert "twice" in proc.stderr


# 2, 3, 5. BIDS -----------------------------------------------------------------

@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    pytest.importorskip("nilearn.image")
    d = tmp_path_factory.mktemp("bids36") / "raw"
    subprocess.run(["python3", str(ROOT / "scripts" / "make_bids_sample.py"), str(d)], check=True)
    return d


def snapshot(d):
    """Every file below `d` with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*")) if p.is_file()}


def test_a_raw_dataset_as_output_is_refused_and_left_as_it_was(raw, tmp_path):
    import shutil
    other = tmp_path / "rawB"
    shutil.copytree(raw, other)
    desc = json.loads((other / "dataset_description.json").read_text())
    desc.update(Authors=["A. Person"], License="CC0", Funding=["grant 1"], EthicsApprovals=["board 2"])
    (other / "dataset_description.json").write_text(json.dumps(desc))
    before = snapshot(other)
    proc = nismooth("bids", raw, other, "participant", "--participant-label", "01", expect=2)
    assert "not a derivatives one" in proc.stderr
    assert snapshot(other) == before
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    proc = nismooth("bids", raw, stray, "participant", "--participant-label", "01", expect=2)
    assert "no dataset_description.json" in proc.stderr


def test_an_existing_derivative_description_keeps_its_fields(raw, tmp_path):
    out = tmp_path / "deriv"
    out.mkdir()
    mine = {"Name": "fMRIPrep - fMRI PREProcessing workflow", "BIDSVersion": "1.9.0",
            "DatasetType": "derivative", "License": "CC0", "HowToAcknowledge": "cite us",
            "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}]}
    (out / "dataset_description.json").write_text(json.dumps(mine))
    nismooth("bids", raw, out, "participant", "--participant-label", "01", "--fwhm", "6")
    got = json.loads((out / "dataset_description.json").read_text())
    for key in ("Name", "License", "HowToAcknowledge", "BIDSVersion"):
        assert got[key] == mine[key], key
    assert [g["Name"] for g in got["GeneratedBy"]] == ["fMRIPrep", "nismooth"]


@pytest.mark.parametrize("datatype", ["../../../src_imgs", "anat/../func", "anat/x", ""])
def test_a_datatype_is_one_label(raw, tmp_path, datatype):
    proc = nismooth("bids", raw, tmp_path / "q" / "r" / "o", "participant", "--participant-label", "01",
                    "--datatype", datatype, expect=2)
    assert "--datatype" in proc.stderr
    assert not (tmp_path / "q" / "src_imgs").exists()


def test_a_link_inside_output_cannot_carry_outputs_out(raw, tmp_path):
    import shutil
    victim = tmp_path / "ds6"
    shutil.copytree(raw, victim)
    before = snapshot(victim)
    out = tmp_path / "of"
    nismooth("bids", raw, out, "participant", "--participant-label", "03", "--datatype", "anat")
    (out / "sub-02").mkdir()
    (out / "sub-02" / "anat").symlink_to(victim / "sub-03" / "anat")
    proc = nismooth("bids", raw, out, "participant", "--participant-label", "02", "--datatype", "anat",
                    expect=2)
    assert "outside the output directory" in proc.stderr
    assert snapshot(victim) == before


def test_two_kernels_under_one_label_conflict_and_sidecars_tell_the_truth(raw, tmp_path):
    out = tmp_path / "d"
    common = ["bids", raw, out, "participant", "--participant-label", "02", "--datatype", "anat"]
    nismooth(*common, "--fwhm", "6", "--compat", "nilearn")
    before = snapshot(out)
    for extra in (["--skip-existing"], []):
        proc = nismooth(*common, "--fwhm", "6", "--mode", "nearest", "--truncate", "1", *extra, expect=2)
        assert "other settings" in proc.stderr and "--desc" in proc.stderr
        assert snapshot(out) == before
    # Its own label: both kernels side by side, each sidecar stating its own.
    nismooth(*common, "--fwhm", "6", "--mode", "nearest", "--truncate", "1", "--desc", "smooth6mmnearest")
    sidecars = sorted(out.rglob("sub-02_desc-*_T1w.json"))
    modes = {p.name: json.loads(p.read_text())["Smoothing"]["mode"] for p in sidecars}
    assert modes == {"sub-02_desc-smooth6mm_T1w.json": "reflect",
                     "sub-02_desc-smooth6mmnearest_T1w.json": "nearest"}


def test_resumes_add_no_generated_by_entries(raw, tmp_path):
    out = tmp_path / "d"
    common = ["bids", raw, out, "participant", "--participant-label", "01", "--datatype", "anat", "--fwhm", "6"]
    nismooth(*common)
    nismooth(*common, "--resume")
    nismooth(*common, "--resume")
    nismooth(*common, "--skip-existing")
    gen = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"]
    assert len(gen) == 1, gen


def test_a_tiny_fwhm_is_refused_before_anything_is_written(raw, tmp_path):
    proc = nismooth("bids", raw, tmp_path / "o", "participant", "--participant-label", "01", "--fwhm", "1e-300",
                    expect=2)
    assert "--desc" in proc.stderr
    assert not (tmp_path / "o" / "dataset_description.json").exists()


def test_sidecar_integers_beyond_two_to_the_63_are_kept(raw, tmp_path):
    import shutil
    src = tmp_path / "raw"
    shutil.copytree(raw, src)
    side = src / "sub-02" / "anat" / "sub-02_T1w.json"
    side.write_text('{"Big": 18446744073709551616123, "Negative": -9223372036854775809, '
                    '"Exact": 0.1000000000000000055511}')
    out = tmp_path / "o"
    nismooth("bids", src, out, "participant", "--participant-label", "02", "--datatype", "anat")
    written = next(out.rglob("sub-02_desc-*_T1w.json")).read_text()
    for digits in ("18446744073709551616123", "-9223372036854775809", "0.1000000000000000055511"):
        assert digits in written, written


# 8, 9, 10. Threads, signals, progress -------------------------------------------

def test_more_threads_than_cpus_are_capped(inputs, tmp_path):
    start = time.monotonic()
    proc = subprocess.run([str(BIN), "run", str(inputs), "-o", str(tmp_path / "o"), "--progress", "none",
                           "--threads", "100000", "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30
    assert "more than the" in proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["processes"][0]["threads"] == len(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """Three images whose σ 200 filter takes seconds each here (52 MB each)."""
    d = tmp_path_factory.mktemp("slow")
    for i in range(3):
        save(d / f"s{i}.nii", noise((256, 256, 200), np.float32, i))
    return d


def start_then_signal(slow, out, extra, signals):
    """Runs on `slow` and sends `signals` ((delay s, signal), ...); returns
    the process, the seconds from the last signal to its exit, and stderr."""
    proc = subprocess.Popen([str(BIN), "run", str(slow), "-o", str(out), "--sigma", "200", "--threads", "1",
                             "--readers", "1", "--progress", "log", "--progress-interval", "0.2",
                             "--report", str(out.parent / (out.name + ".json")), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = None
    for delay, sig in signals:
        time.sleep(delay)
        proc.send_signal(sig)
        last = time.monotonic()
    _, err = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - last, err


def test_grace_zero_stops_a_filter_in_progress(slow, tmp_path):
    # The first image's filter takes 1.5–2 s on the fastest machine seen (Zen 5): signalled at 0.7 s,
    # it is surely mid-filter.
    code, after, err = start_then_signal(slow, tmp_path / "o", ["--grace", "0"], [(0.7, signal.SIGTERM)])
    assert code == 3, err
    assert after < 2.0, f"exited {after:.1f} s after SIGTERM with --grace 0"
    report = json.loads((tmp_path / "o.json").read_text())
    statuses = sorted(i["status"] for i in report["images"])
    assert statuses == ["interrupted", "not_started", "not_started"], statuses
    assert not list((tmp_path / "o").glob("*.nii"))
    # 10: the last progress line counts no image the drain left undone.
    lines = [line for line in err.splitlines() if "progress:" in line]
    assert lines and "0/3 images" in lines[-1], lines[-3:]


def test_a_second_signal_stops_a_filter_in_progress(slow, tmp_path):
    code, after, err = start_then_signal(slow, tmp_path / "o", ["--grace", "600"],
                                         [(0.7, signal.SIGTERM), (1.3, signal.SIGTERM)])
    assert code == 3, err
    assert after < 2.0, f"exited {after:.1f} s after the second SIGTERM"


# 12. What people read -----------------------------------------------------------

@pytest.mark.parametrize("job", ["", "1,2", "1;x", "1_", "_2", "12a"])
def test_report_job_takes_one_job_id(job):
    proc = nismooth("report", "--job", job, expect=2)
    assert "one job id" in proc.stderr


def test_report_shows_control_characters_instead_of_obeying_them(inputs, tmp_path):
    run(inputs, tmp_path / "o", "--report", tmp_path / "r.json")
    r = json.loads((tmp_path / "r.json").read_text())
    r["processes"][0]["host"] = "evil\x1b[2Jhost"
    r["images"][0]["input"] = "in/\x1b]0;title\x07x.nii.gz"
    r["images"][0]["status"] = "failed"
    r["images"][0]["error"] = "bad \x1b[31mred"
    r["summary"]["failed"] = 1
    (tmp_path / "evil.json").write_text(json.dumps(r))
    proc = nismooth("report", tmp_path / "evil.json")
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\u{1b}" in proc.stdout


def test_sbatch_memory_beyond_any_node_is_refused(inputs):
    proc = nismooth("sbatch", "--model", "serial", "--mem", "99999999999999T", "--", inputs, "-o", "/tmp/x",
                    expect=2)
    assert "99999999999999T" in proc.stderr and "panicked" not in proc.stderr


@pytest.mark.parametrize("wall", [1e308, -5.0, 0.0])
def test_estimate_refuses_a_study_with_impossible_times(tmp_path, wall):
    out = tmp_path / "s"
    nismooth("study", "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--shape", "16,16,12", "-o", out)
    study = json.loads((out / "study.json").read_text())
    for p in study["points"]:
        p["wall_s"] = wall
    (out / "bad.json").write_text(json.dumps(study))
    proc = nismooth("estimate", "--from", out / "bad.json", "--tasks", "40000", expect=2)
    assert "no run can have" in proc.stderr


# The hostile round against the fixes above ------------------------------------

def test_a_drain_stops_an_fsl_filter_too(slow, tmp_path):
    code, after, err = start_then_signal(slow, tmp_path / "o", ["--grace", "0", "--compat", "fsl"],
                                         [(2.0, signal.SIGTERM)])
    assert code == 3, err
    assert after < 2.0, f"exited {after:.1f} s after SIGTERM with --grace 0 (--compat fsl)"


def test_a_fifo_nobody_reads_is_an_error_not_a_hang(inputs, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    proc = subprocess.run([str(BIN), "run", str(inputs), "-o", str(tmp_path / "o"), "--progress", "none",
                           "--report", str(tmp_path / "fifo")], capture_output=True, text=True, timeout=60)
    # The images are written: exit 4 (what came after them was lost), not 2 (refused before any
    # work), the cause said once.
    assert proc.returncode == 4 and "no process is reading" in proc.stderr, proc.stderr
    assert proc.stderr.count("no process is reading") == 1, proc.stderr
    assert len(list((tmp_path / "o").glob("*.nii.gz"))) == 3


def test_a_second_signal_while_reading_a_list_from_stdin_stops_it(tmp_path):
    proc = subprocess.Popen([str(BIN), "run", "--list", "-", "-o", str(tmp_path / "o")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM


@pytest.mark.parametrize("inside", ["journal", "lock", "folder"])
def test_reports_inside_nismooths_own_folder_are_refused(inputs, tmp_path, inside):
    out = tmp_path / "o"
    run(inputs, out)
    journal = next((out / ".nismooth").glob("journal*"))
    before = journal.read_bytes()
    target = {"journal": journal, "lock": out / ".nismooth" / "lock", "folder": out / ".nismooth"}[inside]
    proc = run(inputs, out, "--resume", "--report", target, expect=2)
    assert ".nismooth" in proc.stderr
    assert journal.read_bytes() == before
    fresh = tmp_path / "fresh"
    proc = run(inputs, fresh, "--csv", fresh / ".nismooth", expect=2)
    assert not list(fresh.glob("*.nii.gz")) if fresh.exists() else True


def test_report_merge_never_writes_over_what_it_merges(inputs, tmp_path):
    run(inputs, tmp_path / "o", "--report", tmp_path / "ra.json")
    before = (tmp_path / "ra.json").read_bytes()
    (tmp_path / "link.json").symlink_to(tmp_path / "ra.json")
    for target in ("ra.json", "link.json"):
        proc = nismooth("report", "merge", tmp_path / "ra.json", "-o", tmp_path / target, expect=2)
        assert "being merged" in proc.stderr
    proc = nismooth("report", "merge", tmp_path / "ra.json", "-o", tmp_path / "rb.json", "--csv",
                    tmp_path / "rb.json", expect=2)
    assert "also the -o file" in proc.stderr
    assert (tmp_path / "ra.json").read_bytes() == before and not (tmp_path / "rb.json").exists()


def test_a_new_file_under_dev_shm_is_an_ordinary_report(inputs, tmp_path):
    target = Path("/dev/shm") / f"nismooth-test-{os.getpid()}.json"
    try:
        for _ in range(2):
            run(inputs, tmp_path / "o", "--report", target, "--skip-existing")
            json.loads(target.read_text())  # replaced whole each time, never appended to
    finally:
        target.unlink(missing_ok=True)


def test_a_tiny_fwhm_gives_nilearns_nans(tmp_path):
    nilearn_image = pytest.importorskip("nilearn.image")
    import nibabel as nib
    d = tmp_path / "in"
    d.mkdir()
    save(d / "t.nii.gz", noise((9, 10, 11), np.float32, 3))
    for fwhm in ("1e-160", "1e-20"):
        out = tmp_path / f"o{fwhm}"
        nismooth("run", d, "-o", out, "--fwhm", fwhm, "--compat", "nilearn", "--progress", "none")
        want = nilearn_image.smooth_img(str(d / "t.nii.gz"), float(fwhm)).get_fdata()
        got = nib.load(str(out / "t.nii.gz")).get_fdata()
        assert np.array_equal(got, want, equal_nan=True), fwhm


def test_a_run_that_only_skipped_adds_no_generated_by(raw, tmp_path):
    out = tmp_path / "d"
    common = ["bids", raw, out, "participant", "--participant-label", "03", "--datatype", "anat"]
    nismooth(*common, "--fwhm", "6", "--compat", "nilearn")
    for side in out.rglob("sub-03_*.json"):
        side.unlink()
    nismooth(*common, "--fwhm", "8", "--compat", "nilearn", "--desc", "smooth6mm", "--skip-existing")
    gen = json.loads((out / "dataset_description.json").read_text())["GeneratedBy"]
    assert len(gen) == 1 and "FWHM 6 mm" in gen[0]["Description"], gen


def test_names_with_new_lines_make_no_lines_of_their_own(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "h\nFAKE LINE.nii").write_bytes(b"not a nifti")
    proc = nismooth("run", d, "-o", tmp_path / "o", "--progress", "none", "--report", tmp_path / "r.json",
                    expect=1)
    for text in (proc.stdout, proc.stderr, nismooth("report", tmp_path / "r.json").stdout):
        assert not any(line.startswith("FAKE LINE") for line in text.splitlines()), text
        assert "\\u{a}FAKE LINE" in text


def test_sizes_and_studies_that_mean_nothing_are_refused(inputs, tmp_path):
    nismooth("sbatch", "--model", "serial", "--mem", "0", "--", inputs, "-o", tmp_path / "x", expect=2)
    proc = nismooth("report", "--job", "1", "--mem-request", "4X", expect=2)
    assert "--mem-request" in proc.stderr
    out = tmp_path / "s"
    nismooth("study", "--ranks", "1", "--threads", "1", "--tasks", "1,2", "--shape", "16,16,12", "-o", out)
    study = json.loads((out / "study.json").read_text())
    study["points"][0]["outer_wall_s"] = 1e308
    (out / "bad.json").write_text(json.dumps(study))
    proc = nismooth("estimate", "--from", out / "bad.json", "--tasks", "40000", expect=2)
    assert "outer_wall_s" in proc.stderr


# The second hostile round -----------------------------------------------------

@pytest.mark.skipif(not ROOT_USER, reason="mknod needs root")
def test_a_fifo_or_device_at_an_output_name_is_refused_not_replaced(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        save(d / f"s{i}.nii.gz", noise((8, 8, 8), np.int16, i))
    out = tmp_path / "o"
    out.mkdir()
    os.mkfifo(out / "s0.nii.gz")
    os.mknod(out / "s1.nii.gz", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    proc = subprocess.run([str(BIN), "run", str(d), "-o", str(out), "--progress", "none"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is at this name" in proc.stderr, proc.stderr
    assert stat.S_ISFIFO(os.lstat(out / "s0.nii.gz").st_mode)
    assert stat.S_ISCHR(os.lstat(out / "s1.nii.gz").st_mode)
    gen = tmp_path / "g"
    gen.mkdir()
    os.mkfifo(gen / "sub-0000_T1w.nii.gz")
    subprocess.run([str(BIN), "generate", "-o", str(gen), "-n", "1", "--shape", "8,8,8"],
                   capture_output=True, timeout=60)
    assert stat.S_ISFIFO(os.lstat(gen / "sub-0000_T1w.nii.gz").st_mode)
    proc = subprocess.run([str(BIN), "generate", "-o", str(out / ".nismooth"), "-n", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and not list((out / ".nismooth").glob("*.nii.gz"))


def test_sbatch_write_never_lands_on_the_runs_input(inputs, tmp_path):
    victim = next(inputs.glob("*.nii.gz"))
    before = victim.read_bytes()
    proc = nismooth("sbatch", "--model", "serial", "--write", victim, "--", inputs, "-o", tmp_path / "o",
                    expect=2)
    assert "input" in proc.stderr and victim.read_bytes() == before
    nismooth("sbatch", "--model", "serial", "--write", tmp_path / "o" / ".nismooth" / "x.sh", "--", inputs,
             "-o", tmp_path / "o", expect=2)
    os.mkfifo(tmp_path / "ff")
    proc = subprocess.run([str(BIN), "sbatch", "--model", "serial", "--write", str(tmp_path / "ff"), "--",
                           str(inputs), "-o", str(tmp_path / "o")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "no process is reading" in proc.stderr, proc.stderr


def test_fifos_beside_the_outputs_never_hold_the_run(raw, inputs, tmp_path):
    d3 = tmp_path / "d3"
    (d3 / ".nismooth").mkdir(parents=True)
    (d3 / "sub-02" / "anat").mkdir(parents=True)
    os.mkfifo(d3 / "sub-02" / "anat" / "sub-02_desc-smoothsigma2vox_T1w.json")
    proc = subprocess.run([str(BIN), "bids", str(raw), str(d3), "participant", "--participant-label", "02",
                           "--datatype", "anat"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "FIFO" in proc.stderr, proc.stderr
    d4 = tmp_path / "d4"
    d4.mkdir()
    os.mkfifo(d4 / "dataset_description.json")
    proc = subprocess.run([str(BIN), "bids", str(raw), str(d4), "participant", "--participant-label", "02"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "FIFO" in proc.stderr, proc.stderr
    d6 = tmp_path / "d6"
    (d6 / ".nismooth").mkdir(parents=True)
    os.mkfifo(d6 / ".nismooth" / "journal-1-1-rank0.jsonl")
    proc = subprocess.run([str(BIN), "run", str(inputs), "-o", str(d6), "--resume", "--progress", "none"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


# Round four (a hostile round against the newer features) -------------------

def test_bench_filter_never_dumps_over_its_input_and_refuses_what_run_refuses(inputs, tmp_path):
    img = tmp_path / "img.nii"
    save(img, noise((16, 12, 10), np.float32, 5))
    before = img.read_bytes()
    proc = nismooth("bench-filter", img, "--reps", "1", "--dump", img, expect=2)
    assert "is the input" in proc.stderr and img.read_bytes() == before
    os.symlink(img, tmp_path / "link")
    nismooth("bench-filter", img, "--reps", "1", "--dump", tmp_path / "link", expect=2)
    assert img.read_bytes() == before, "through a link to it, the input is still the input"
    # σ 1e9 aborted allocating its kernel (exit 134); 100 000 threads were started without end.
    nismooth("bench-filter", img, "--reps", "1", "--sigma", "1e9", expect=2)
    out = json.loads(nismooth("bench-filter", img, "--reps", "1", "--threads", "100000").stdout)
    assert out["threads"] <= os.cpu_count()


@pytest.mark.parametrize("shape,limit", [("32767,32767,32767,32767,32767,32767,32767", None),
                                         ("32767,32767,32767", None), ("4000,4000,100", 2_000_000)])
def test_generate_refuses_shapes_it_cannot_hold(tmp_path, shape, limit):
    pre = (lambda: __import__("resource").setrlimit(__import__("resource").RLIMIT_AS, (limit * 1024,) * 2)) \
        if limit else None
    proc = subprocess.run([str(BIN), "generate", "-q", "-o", str(tmp_path / "g"), "-n", "1", "--shape", shape],
                          capture_output=True, text=True, timeout=60, preexec_fn=pre)
    assert proc.returncode == 2 and "shape" in proc.stderr, (proc.returncode, proc.stderr)
    assert not list(tmp_path.glob("g/*.nii*"))


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A 512³ scaled int8 image (held as float64: 1 GiB, streamed in slabs) and a small one."""
    import nibabel as nib
    d = tmp_path_factory.mktemp("tight") / "mem"
    d.mkdir()
    big = nib.Nifti1Image(np.zeros((512, 512, 512), np.int8), np.eye(4))
    big.header.set_slope_inter(2.0, 1.0)
    nib.save(big, str(d / "big8.nii.gz"))
    save(d / "small.nii", noise((64, 64, 32), np.float32, 1))
    return d


@pytest.mark.parametrize("limit_kib", [30_000, 60_000, 90_000, 120_000, 150_000, 250_000])
def test_an_address_space_limit_fails_images_cleanly_never_aborts(tight, tmp_path, limit_kib):
    # 12 of 15 runs under limits of 200–700 MB aborted ("memory allocation of 8388608 bytes
    # failed", exit 134): each thread's malloc arena reserved 64 MiB, and only a part (not what the
    # pipeline holds of the image) was checked against the room.
    import resource
    proc = subprocess.run([str(BIN), "run", "-q", str(tight), "-o", str(tmp_path / "o"), "--progress", "none"],
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit_kib * 1024,) * 2))
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr[-2000:])
    assert "memory allocation" not in proc.stderr and "panicked" not in proc.stderr, proc.stderr[-2000:]
    if proc.returncode == 1:
        assert (tmp_path / "o" / "small.nii").is_file(), "the image that fits is still written"
        assert "ulimit -v" in proc.stderr
    if proc.returncode == 2:
        assert "ulimit -v" in proc.stderr


def test_a_journal_of_gigabytes_is_not_read_whole(inputs, tmp_path):
    import resource
    run(inputs, tmp_path / "o")
    journal = next((tmp_path / "o" / ".nismooth").glob("journal-*.jsonl"))
    os.truncate(journal, 6 << 30)  # sparse: zeros, no new line
    proc = subprocess.run([str(BIN), "run", "-q", str(inputs), "-o", str(tmp_path / "o"), "--resume",
                           "--progress", "none"], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30,) * 2))
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert not (tmp_path / "o" / ".nismooth" / "lock").exists(), "the lock is let go"


def test_sacct_that_never_answers_is_given_up(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacct").write_text("#!/bin/sh\nexec sleep 1000\n")
    (fake / "sacct").chmod(0o755)
    t = time.monotonic()
    proc = subprocess.run([str(BIN), "report", "--job", "123"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "NISMOOTH_SACCT_TIMEOUT": "2"})
    assert proc.returncode == 2 and "no answer within 2 s" in proc.stderr, proc.stderr
    assert time.monotonic() - t < 30


def test_a_gzip_file_padded_with_zeros_reads_as_nibabel_reads_it(tmp_path):
    import gzip
    import nibabel as nib
    from scipy import ndimage
    save(tmp_path / "a.nii", noise((10, 9, 8), np.float32, 3))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.nii.gz").write_bytes(gzip.compress((tmp_path / "a.nii").read_bytes()) + b"\0" * 1000)
    run(tmp_path / "in", tmp_path / "o")
    data = np.asarray(nib.load(str(tmp_path / "in" / "t.nii.gz")).dataobj)
    got = np.asarray(nib.load(str(tmp_path / "o" / "t.nii.gz")).dataobj)
    assert np.array_equal(got, ndimage.gaussian_filter(data, 2))


def test_one_file_runs_fold_their_journals(tmp_path):
    save(tmp_path / "a.nii", noise((10, 9, 8), np.float32, 3))
    for k in range(7):
        nismooth("run", tmp_path / "a.nii", "-o", tmp_path / f"a_s{k}.nii.gz", "--progress", "none")
    journals = list((tmp_path / ".nismooth").glob("journal-*.jsonl"))
    assert len(journals) <= 6, sorted(p.name for p in journals)
    nismooth("run", tmp_path / "a.nii", "-o", tmp_path / "a_s0.nii.gz", "--resume", "--progress", "none")


def test_a_refusal_under_mpirun_is_said_once(inputs, tmp_path):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.run(["mpirun", "-n", "2", str(BIN), "run", str(inputs), "-o", str(tmp_path / "o"), "--array"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("nismooth: error:") == 1, proc.stderr
    proc = subprocess.run(["mpirun", "-n", "2", str(BIN), "bids", str(tmp_path / "nothing"), str(tmp_path / "d"),
                           "participant"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0 and proc.stderr.count("nismooth: error:") == 1, proc.stderr


def test_estimate_refuses_a_workload_beyond_any_count(tmp_path):
    proc = nismooth("estimate", "--from", tmp_path / "none.json", "--tasks", "18446744073709551615", expect=2)
    assert "at most" in proc.stderr


def test_sbatch_says_which_binary_the_job_runs(inputs, tmp_path):
    # A nismooth on PATH that is not the one writing the script: the job runs it, and the script says so.
    other = tmp_path / "path"
    other.mkdir()
    __import__("shutil").copy(BIN, other / "nismooth")
    proc = subprocess.run([str(BIN), "sbatch", "--model", "serial", "--", str(inputs), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{other}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    assert f"NISMOOTH={other / 'nismooth'}" in proc.stdout and "not the one that wrote this script" in proc.stdout, \
        proc.stdout


# Round five --------------------------------------------------------------------

def test_a_standard_output_that_cannot_be_written_costs_no_report(inputs, tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([str(BIN), "run", str(inputs), "-o", str(tmp_path / "o"), "--progress", "none",
                               "--report", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 4 and "panicked" not in proc.stderr, proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["ok"] == 3 and (tmp_path / "r.csv").exists()
    # A reader that goes away (| head) ends the output quietly.
    shown = subprocess.run(f"{BIN} report {tmp_path / 'r.json'} | head -c 1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert "panicked" not in shown.stderr, shown.stderr


def test_readers_and_slurms_cpus_are_bounded(inputs, tmp_path):
    run(inputs, tmp_path / "a", "--readers", "18446744073709551615")
    run(inputs, tmp_path / "b", "--readers", "30000")
    t = time.monotonic()
    proc = subprocess.run([str(BIN), "run", str(inputs), "-o", str(tmp_path / "c"), "--progress", "none",
                           "--no-deadline"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SLURM_JOB_ID": "999999", "SLURM_CPUS_PER_TASK": "100000"})
    assert proc.returncode == 0 and time.monotonic() - t < 60, proc.stderr
    assert "capped" in proc.stderr, proc.stderr


@pytest.mark.skipif(not ROOT_USER, reason="mknod needs root")
def test_a_list_of_endless_bytes_is_refused_not_held(tmp_path):
    os.mknod(tmp_path / "zero", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    proc = subprocess.run([str(BIN), "run", "--list", str(tmp_path / "zero"), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a list of paths" in proc.stderr, proc.stderr


def test_no_output_inside_a_runs_state_folder(inputs, tmp_path):
    img = next(inputs.iterdir())
    for target in (tmp_path / "t" / ".nismooth" / "lock-file-A.nii", tmp_path / "t" / ".nismooth"):
        proc = nismooth("run", img, "-o", target, expect=2)
        assert ".nismooth folder" in proc.stderr


def test_bytes_after_a_gzip_member_are_named(tmp_path):
    save(tmp_path / "a.nii.gz", noise((8, 8, 8), np.float32, 1))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "g.nii.gz").write_bytes((tmp_path / "a.nii.gz").read_bytes() + b"X")
    proc = run(tmp_path / "in", tmp_path / "o", expect=1)
    assert "data after the gzip member" in proc.stderr, proc.stderr
