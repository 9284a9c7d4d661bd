"""`nismooth status OUTDIR` (issue 41): a run's progress from its journals,
from another shell while it runs and after it ends, killed ranks
included. It only reads."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import BIN, MPIRUN, mpi_launch, nismooth, noise, save

MPI_ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
needs_mpi = pytest.mark.skipif(
    MPIRUN is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="no mpirun (CI sets NISMOOTH_REQUIRE_MPI=1 so that this cannot pass silently)",
)


def status(outdir, *more):
    r = subprocess.run([str(BIN), "status", str(outdir), "--json", *more], capture_output=True, text=True)
    return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr


def phantoms(tmp_path, n, shape=(24, 24, 16)):
    nismooth("generate", "-q", "-o", tmp_path / "in", "-n", n, "--shape", ",".join(map(str, shape)))
    return tmp_path / "in"


def test_status_of_ended_runs_says_how_they_ended(tmp_path):
    src = phantoms(tmp_path, 6)
    save(src / "bad.nii.gz", noise((4, 4, 4), np.float32, 0))
    (src / "bad.nii.gz").write_bytes(b"not a nifti")
    nismooth("run", src, "-o", tmp_path / "out", "-q", expect=1)
    before = sorted(p.name for p in (tmp_path / "out" / ".nismooth").iterdir())
    code, s, _ = status(tmp_path / "out")
    assert code == 1 and s["state"] == {"is": "finished_with_failures", "failed": 1}
    assert s["images"] == 7 and s["done"] == 7 and s["failed"][0]["input"].endswith("bad.nii.gz")
    assert [r["state"] for r in s["ranks"]] == ["ended"]
    # Only read: nothing added, no lock taken.
    assert sorted(p.name for p in (tmp_path / "out" / ".nismooth").iterdir()) == before
    (src / "bad.nii.gz").unlink()
    nismooth("run", src, "-o", tmp_path / "o2", "-q", "--deadline", "0s", expect=3)
    code, s, _ = status(tmp_path / "o2")
    assert code == 3 and s["state"] == {"is": "stopped_early", "left": 6}
    nismooth("run", src, "-o", tmp_path / "o2", "-q", "--resume")
    code, s, _ = status(tmp_path / "o2")
    assert code == 0 and s["state"] == {"is": "finished"} and s["done"] == 6
    text = subprocess.run([str(BIN), "status", str(tmp_path / "o2")], capture_output=True, text=True).stdout
    assert "done     6 of 6 (100.0%)" in text and "finished" in text


def test_status_of_nothing_says_so(tmp_path):
    r = subprocess.run([str(BIN), "status", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "no run has written here" in r.stderr
    src = phantoms(tmp_path, 1)
    nismooth("run", src, "-o", tmp_path / "out", "-q")
    r = subprocess.run([str(BIN), "status", str(tmp_path / "out"), "--run", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "no journal of run nope" in r.stderr


@needs_mpi
def test_status_follows_a_two_rank_run_from_another_shell_to_its_end(tmp_path):
    src = phantoms(tmp_path, 200, (40, 40, 24))
    out = tmp_path / "out"
    run = subprocess.Popen([*mpi_launch(2), str(BIN), "run", str(src), "-o", str(out), "--threads", "1",
                            "--sigma", "3", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=MPI_ENV)
    seen = []
    while run.poll() is None:
        code, s, _ = status(out)
        if s is not None:
            seen.append((code, s))
        time.sleep(0.05)
    assert run.wait() == 0
    code, s, _ = status(out)
    assert code == 0 and s["state"] == {"is": "finished"} and s["done"] == 200 and s["images"] == 200
    assert s["ranks_total"] == 2 and sum(r["images"] for r in s["ranks"]) == 200
    running = [s for c, s in seen if c == 5]
    assert running, "status never saw the run at work"
    dones = [s["done"] for _, s in seen]
    assert dones == sorted(dones), "the done count went down"
    midway = [s for s in running if 0 < s["done"] < 200 and s["eta_s"] is not None]
    assert midway, "no ETA while the run was going"
    # The ETA said midway, against what the run then took.
    first = midway[len(midway) // 2]
    took_rest = s["elapsed_s"] - first["elapsed_s"]
    assert 0.2 * took_rest <= first["eta_s"] <= 5 * took_rest + 1.0, (first["eta_s"], took_rest)


@needs_mpi
def test_a_killed_rank_leaves_the_run_not_finished(tmp_path):
    src = phantoms(tmp_path, 200, (48, 48, 32))
    out = tmp_path / "out"
    run = subprocess.Popen([*mpi_launch(2), str(BIN), "run", str(src), "-o", str(out), "--threads", "1",
                            "--sigma", "4", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=MPI_ENV)
    victim = None
    deadline = time.time() + 60
    while run.poll() is None and time.time() < deadline:
        code, s, _ = status(out)
        if s and s["done"] >= 10 and len(s["ranks"]) == 2:
            victim = s["ranks"][1]["pid"]
            os.kill(victim, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert victim is not None, "the run ended before a rank could be killed"
    run.wait(timeout=60)
    code, s, _ = status(out)
    assert code == 6 and s["state"]["is"] == "not_finished" and 1 in s["state"]["ranks"]
    assert s["ranks"][1]["state"] == "gone" and s["done"] < 200


def test_what_round_thirteen_found_is_said_right(tmp_path):
    """--watch beyond a day is refused (1e300 panicked); names in journals
    are shown escaped (a file name forged a state line); an ended run says
    how long it took, not "started … ago"; other runs in OUTDIR (an array's
    other tasks) are named, since the status is of one run; a journal that
    is a folder or a FIFO is no run's."""
    src = phantoms(tmp_path, 2)
    (src / "x\n  state    finished: all\x1b[31m.nii").write_bytes(b"junk")
    nismooth("run", src, "-o", tmp_path / "out", "-q", expect=1)
    r = subprocess.run([str(BIN), "status", str(tmp_path / "out"), "--watch", "1e300"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "at most a day" in r.stderr
    text = subprocess.run([str(BIN), "status", str(tmp_path / "out")], capture_output=True, text=True).stdout
    assert "\x1b" not in text and "\n  state    finished: all" not in text
    assert "took " in text and " ago\n" not in text.splitlines()[0] + "\n"
    nismooth("run", src / "sub-0000_T1w.nii.gz", "-o", tmp_path / "out" / "one.nii.gz", "-q")
    code, s, _ = status(tmp_path / "out")
    assert len(s["other_runs"]) == 1
    text = subprocess.run([str(BIN), "status", str(tmp_path / "out")], capture_output=True, text=True).stdout
    assert "1 other run(s) wrote journals here" in text
    (tmp_path / "out" / ".nismooth" / "journal-99-rank0.jsonl").mkdir()
    os.mkfifo(tmp_path / "out" / ".nismooth" / "journal-98-rank0.jsonl")
    code, s, _ = status(tmp_path / "out")
    assert code == 0 and s["images"] == 1
