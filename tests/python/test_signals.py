"""Stopping early loses nothing: SIGTERM (and its kin), a second signal, --grace, --deadline, under one
process and under `mpirun -n 2`. Every image of the run is in the report (the undone ones as
`not_started` or `interrupted`), no temp file is left, the exit code is 3, and `--resume` then finishes
the rest with outputs byte-identical to an uninterrupted run.

The Slurm side (a job out of time that drains, requeues itself and completes) is in tests/slurm.
"""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
N = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 images of 256×256×128 int16 (12 generated, each copied once: 60–150 ms each at one thread
    here) and their outputs from one uninterrupted run."""
    d = tmp_path_factory.mktemp("signals")
    subprocess.run([str(BIN), "generate", "-o", str(d / "in"), "-n", "12", "--shape", "256,256,128", "--seed", "9"],
                   check=True, capture_output=True)
    originals = sorted((d / "in").iterdir())
    for k in range(12, N):
        shutil.copyfile(originals[k % 12], d / "in" / f"sub-{k:04d}_T1w.nii.gz")
    t = time.monotonic()
    subprocess.run([str(BIN), "run", str(d / "in"), "-o", str(d / "whole"), "--threads", "1", "--progress", "none",
                    "--no-sync"], check=True, capture_output=True)
    d.joinpath("whole_s").write_text(str(time.monotonic() - t))
    return d


def start(cmd, out):
    return subprocess.Popen([*map(str, cmd)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def run_args(data, out, report, *extra):
    return [BIN, "run", data / "in", "-o", out, "--threads", "1", "--progress", "none", "--no-sync", "--report",
            report, *extra]


def wait_for_outputs(out, n, timeout=30):
    """Until `n` outputs are in place: the run is then surely mid-way."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if out.exists() and sum(p.name.endswith(".nii.gz") and not p.name.startswith(".") for p in out.iterdir()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{n} outputs not written within {timeout} s")


def temps(out):
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def statuses(report):
    r = json.loads(Path(report).read_text())
    assert [i["index"] for i in r["images"]] == list(range(N)), "every image of the run is in the report"
    return r, [i["status"] for i in r["images"]]


def resumes_to_the_whole(data, out):
    proc = subprocess.run([*map(str, run_args(data, out, out.parent / "resumed.json", "--resume"))],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (data / "whole").iterdir() if p.name != ".nismooth")
    assert sorted(p.name for p in out.iterdir() if p.name != ".nismooth") == names
    for n in names:
        assert (out / n).read_bytes() == (data / "whole" / n).read_bytes(), n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_drain_signal_writes_the_report_and_exits_3(data, tmp_path, sig):
    out, report = tmp_path / "out", tmp_path / "r.json"
    p = start(run_args(data, out, report), out)
    wait_for_outputs(out, 6)
    sent = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - sent
    print(f"{signal.Signals(sig).name}: exit {p.returncode} {took:.2f} s after the signal")
    assert p.returncode == 3, err
    assert "--resume" in err and "draining" in err
    r, st = statuses(report)
    assert st.count("ok") >= 8 and st.count("not_started") >= 1 and set(st) <= {"ok", "not_started"}, st
    assert r["stopped"]["reason"] == signal.Signals(sig).name
    assert temps(out) == []
    assert took < 10, "images in flight finish; nothing else waits"
    if sig == signal.SIGTERM:
        resumes_to_the_whole(data, out)


def test_no_grace_abandons_the_images_in_flight_cleanly(data, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    p = start(run_args(data, out, report, "--grace", "0"), out)
    wait_for_outputs(out, 6)
    done = sum(n.name.endswith(".nii.gz") and not n.name.startswith(".") for n in out.iterdir())
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == 3
    r, st = statuses(report)
    # Abandoned, not finished: at most the image whose output was being put
    # in place as the signal came is ok beyond those already written (an
    # image between two stages at that moment is `not_started`'s twin: with
    # one thread, a third of the runs had none in flight, before and now).
    assert st.count("interrupted") >= 1 or st.count("ok") <= done + 1, (done, st)
    assert temps(out) == []
    resumes_to_the_whole(data, out)


def test_a_second_signal_abandons_at_once(data, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    # A grace far longer than the run: only the second signal can cut it short. The second comes
    # 1.2 s after the first (sooner, it would be taken as the same event arriving twice).
    p = start(run_args(data, out, report, "--grace", "600", "--drain-signal", "TERM"), out)
    wait_for_outputs(out, 4)
    p.send_signal(signal.SIGTERM)
    time.sleep(1.2)
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    statuses(report)
    assert temps(out) == []


def test_drain_signal_none_leaves_the_default_action(data, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    p = start(run_args(data, out, report, "--drain-signal", "none"), out)
    wait_for_outputs(out, 2)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGTERM and not report.exists()


def test_a_deadline_half_the_work_stops_in_time_and_not_early(data, tmp_path):
    """The deadline is half an uninterrupted run. The bounds are the run's own: it ends by the deadline,
    and the time it leaves unused is under what the images the pipeline holds (read, filter, write)
    take at this run's own pace, so it stopped because the next image would not fit, not early. (A
    bound on the count of images done flaked: the machine's pace drifts between the two runs.)"""
    whole = float((data / "whole_s").read_text())
    out, report = tmp_path / "out", tmp_path / "r.json"
    limit = whole / 2
    t = time.monotonic()
    proc = subprocess.run([*map(str, run_args(data, out, report, "--deadline", f"{limit:.2f}s"))],
                          capture_output=True, text=True, env=ENV)
    took = time.monotonic() - t
    assert proc.returncode == 3, proc.stderr
    r, st = statuses(report)
    done = [i for i in r["images"] if i["status"] == "ok"]
    span = max(i["finished_s"] - i["started_s"] for i in done) if done else float("nan")
    unused = r["stopped"]["unused_s"]
    print(f"deadline {limit:.2f} s (uninterrupted run {whole:.2f} s): {len(done)}/{N} done in {took:.2f} s, "
          f"{unused:.2f} s unused; one image read to written in {span:.3f} s")
    assert r["stopped"]["reason"] == "deadline" and r["stopped"]["deadline_from"].startswith("--deadline")
    assert 1 <= len(done) < N, st
    assert unused <= 3 * span + 0.05, "stopped early: the next image would have fitted"
    assert took <= limit + 1.0, "the run ends near its deadline, not after it"
    assert temps(out) == []
    resumes_to_the_whole(data, out)


def rank_pids(out):
    """The PIDs of the ranks writing to `out` (the command line names it)."""
    found = subprocess.run(["pgrep", "-f", f"^{BIN} run .* -o {out} "], capture_output=True, text=True).stdout
    return [int(x) for x in found.split()]


@pytest.mark.parametrize("to", ["every rank", "one rank"])
def test_under_mpirun_a_drain_reaches_every_rank(data, tmp_path, to):
    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun")
    out, report = tmp_path / "out", tmp_path / "r.json"
    p = start(["mpirun", "-n", "2", *run_args(data, out, report)], out)
    wait_for_outputs(out, 6)
    pids = rank_pids(out)
    assert len(pids) == 2, pids
    # As Slurm's time limit does (every task), or as a user's kill does (one).
    for pid in pids if to == "every rank" else pids[-1:]:
        os.kill(pid, signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    r, st = statuses(report)
    assert st.count("not_started") >= 1 and {i["rank"] for i in r["images"] if i["status"] == "ok"} == {0, 1}
    reached = sorted(p["stopped_by"] for p in r["processes"])
    assert reached == (["SIGTERM", "SIGTERM"] if to == "every rank" else ["SIGTERM", "another rank"]), reached
    assert temps(out) == []
    resumes_to_the_whole(data, out)


def test_a_rank_killed_outright_does_not_leave_the_other_waiting(data, tmp_path):
    if shutil.which("mpirun") is None:
        pytest.skip("needs mpirun")
    out, report = tmp_path / "out", tmp_path / "r.json"
    p = start(["mpirun", "-n", "2", *run_args(data, out, report)], out)
    wait_for_outputs(out, 4)
    os.kill(rank_pids(out)[-1], signal.SIGKILL)
    t = time.monotonic()
    p.communicate(timeout=60)
    print(f"SIGKILL to one rank: mpirun ended {time.monotonic() - t:.2f} s later, exit {p.returncode}")
    assert p.returncode != 0 and rank_pids(out) == []
    # The killed rank's temp file, if it was writing, is a dead run's: --resume removes it and finishes.
    resumes_to_the_whole(data, out)
