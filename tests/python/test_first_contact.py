"""What a first-time user sees: results on standard output, logs and
progress on standard error, -q and -v, progress lines a batch log can use
(done/total over every rank, images/s, MB/s, elapsed, ETA), and the bar on a
real pseudo-terminal."""
import os
import pty
import re
import select
import subprocess
import time

import pytest

from conftest import BIN, MPIRUN, mpi_launch

PROGRESS = re.compile(r"progress: (\d+)/(\d+) images \((\d+)%\)(, \d+ failed)?, ([\d.]+) images/s, "
                      r"([\d.]+) MB/s, elapsed (\d+:\d\d:\d\d), ETA (\d+:\d\d:\d\d|\?)")
ENV = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
MPI_ENV = dict(ENV, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("fc") / "in"
    subprocess.run([str(BIN), "generate", "-o", str(d), "-n", "12", "--shape", "64,64,48", "--seed", "3"],
                   check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def slower(tmp_path_factory):
    """Images that take a second or two at gzip level 9 on one thread, so
    that a progress line every 0.1 s (and a bar every 0.25 s) has time to show."""
    d = tmp_path_factory.mktemp("fc") / "slower"
    subprocess.run([str(BIN), "generate", "-o", str(d), "-n", "20", "--shape", "128,128,96", "--seed", "4"],
                   check=True, capture_output=True)
    return d


def run(args, env=ENV):
    return subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)


def test_the_summary_is_on_stdout_and_the_logs_on_stderr(images, tmp_path):
    p = run(["run", images, "-o", tmp_path / "out"])
    assert p.returncode == 0, p.stderr
    assert "CPU efficiency" in p.stdout and "12 ok" in p.stdout
    assert "CPU efficiency" not in p.stderr
    assert PROGRESS.search(p.stderr), p.stderr
    assert "built without CUDA" not in p.stderr, "developer advice is at debug level"


def test_quiet_and_verbose(images, tmp_path):
    q = run(["-q", "run", images, "-o", tmp_path / "q"])
    assert q.returncode == 0 and q.stderr == "", q.stderr
    assert "12 ok" in q.stdout
    v = run(["run", images, "-o", tmp_path / "v", "-v", "--progress", "none"])
    assert v.returncode == 0
    assert " DEBUG] " in v.stderr and "backend auto" in v.stderr, v.stderr
    # Without -q/-v, RUST_LOG still chooses.
    r = run(["run", images, "-o", tmp_path / "r", "--progress", "none"], env=dict(ENV, RUST_LOG="warn"))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_progress_lines_every_interval_with_rate_and_eta(slower, tmp_path):
    """--progress log --progress-interval 0.1 on one thread: several lines,
    counts that only grow, the last one whole."""
    p = run(["run", slower, "-o", tmp_path / "out", "--progress", "log", "--progress-interval", "0.1",
             "--threads", "1", "--compression-level", "9"])
    assert p.returncode == 0, p.stderr
    lines = [PROGRESS.search(l) for l in p.stderr.splitlines() if "progress:" in l]
    assert len(lines) >= 2, p.stderr
    done = [int(m.group(1)) for m in lines]
    assert done == sorted(done) and done[-1] == 20 and lines[-1].group(2) == "20", p.stderr
    assert lines[-1].group(8) == "0:00:00" and float(lines[-1].group(6)) > 0
    print("\n".join(l.group(0) for l in lines))


@pytest.mark.skipif(MPIRUN is None, reason="needs mpirun")
@pytest.mark.parametrize("schedule", ["balanced", "dynamic"])
def test_progress_under_mpi_counts_every_ranks_images(slower, tmp_path, schedule):
    """Two ranks: root's lines count both ranks' finished images (read from
    their journals), under a static and the dynamic schedule."""
    cmd = [*mpi_launch(2), str(BIN), "run", str(slower), "-o", str(tmp_path / "out"), "--threads", "1",
           "--schedule", schedule, "--progress", "log", "--progress-interval", "0.1", "--compression-level", "9"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [l for l in p.stderr.splitlines() if "progress:" in l]
    assert len(lines) >= 2 and all("rank 0/2" in l for l in lines), p.stderr
    last = PROGRESS.search(lines[-1])
    assert (last.group(1), last.group(2)) == ("20", "20"), lines[-1]
    assert p.stdout.count("CPU efficiency") == 1
    print("\n".join(lines))


def test_the_bar_on_a_terminal(slower, tmp_path):
    """On a pseudo-terminal, `auto` draws a bar with the same figures, and
    clears it at the end."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(BIN), "run", str(slower), "-o", str(tmp_path / "out"), "--threads", "1",
                             "--compression-level", "9"],
                            stdin=follower, stdout=subprocess.PIPE, stderr=follower, env=ENV)
    os.close(follower)
    seen = b""
    deadline = time.time() + 120
    while time.time() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    text = seen.decode(errors="replace")
    assert re.search(r"\d+/20 images", text), text
    assert re.search(r"[\d.]+ images/s, [\d.]+ MB/s, elapsed \d+:\d\d:\d\d, ETA", text), text
    assert "20 ok" in out


def test_an_array_task_names_its_share_once(images, tmp_path):
    """Slurm's variables for task 1 of --array=0-2: the log names the task
    and its share of the 12 images once (it used to say "4 of 12 images" twice)."""
    env = {k: v for k, v in ENV.items() if not k.startswith("SLURM_")}
    env.update(SLURM_JOB_ID="7", SLURM_ARRAY_JOB_ID="7", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_MIN="0",
               SLURM_ARRAY_TASK_MAX="2", SLURM_ARRAY_TASK_COUNT="3")
    r = run(["run", images, "-o", tmp_path / "o", "--array"], env=env)
    assert r.returncode == 0, r.stderr
    assert "array task 1 (2 of 3): 4 of 12 images" in r.stderr, r.stderr
    assert r.stderr.count("of 12 images") == 1, r.stderr
