"""Data safety (issue 20): no run may write over an input, a report over an
image, or an output through a path that resolves onto an input; odd file
names, FIFOs, broken links, unbounded kernels and cut gzip trailers are clear
errors (or handled exactly), never a hang or a wrong output; `--resume`
refuses other options and redoes outputs of other inputs; one OUTDIR is held
by one run at a time (a lock); outputs are fsynced before they are renamed
into place, and the folder after.

Every hostile file is made here, every subprocess has a timeout (a hang
fails), and the MPI cases are skipped without `mpirun` unless
NISMOOTH_REQUIRE_MPI=1. Each test's docstring names the contract's item.
"""
import gzip
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import BIN, MPIRUN, mpi_launch, names, noise, read_bytes, save, write_bytes
from test_mpi import ENV as MPI_ENV
from test_mpi import mpirun as mpirun_each_rank
from test_reference import assert_exact, scipy_ref

SHAPE = (8, 7, 6)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount --bind needs root (CI runs as root)")
needs_mpi = pytest.mark.skipif(
    MPIRUN is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="no mpirun (CI sets NISMOOTH_REQUIRE_MPI=1 so that this cannot pass silently)",
)


def ns(*args, expect=0, env=None, timeout=60, cwd=None):
    """conftest's `nismooth`, with a timeout (a hang fails the test), a cwd,
    bytes arguments passed through as they are (non-UTF-8 paths), and
    expect=None for any exit code."""
    full_env = None if env is None else {**os.environ, **env}
    argv = [str(BIN), *(a if isinstance(a, bytes) else str(a) for a in args)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="surrogateescape",
                              env=full_env, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        err = e.stderr or b""
        proc, hung = None, (err.decode(errors="replace") if isinstance(err, bytes) else err)[-3000:]
    if proc is None:
        pytest.fail(f"nismooth {' '.join(map(str, args))} did not end within {timeout} s\nstderr:\n{hung}")
    assert expect is None or proc.returncode == expect, (
        f"exit {proc.returncode} (expected {expect})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


def records(report):
    """The report's image records, by the input's file name."""
    r = json.loads(Path(report).read_text())
    return {os.path.basename(i["input"]): i for i in r["images"]}


def snapshot(d):
    """Every regular file under `d` (recursively, links not followed) and its bytes."""
    return {p.relative_to(d): p.read_bytes() for p in sorted(Path(d).rglob("*"))
            if p.is_file() and not p.is_symlink()}


def images(d):
    """The bytes of the image files in an output folder (no journal, no temp files)."""
    return {n: (Path(d) / n).read_bytes() for n in names(d)}


def no_image_outputs(out):
    return not Path(out).exists() or names(out) == []


def in_folder(tmp_path, n=2, dtype="float32", ext=".nii.gz", name="in", seed=0):
    d = tmp_path / name
    d.mkdir()
    return d, [save(d / f"{chr(ord('a') + i)}{ext}", noise(SHAPE, dtype, seed + i)) for i in range(n)]


# ---------------------------------------------------------------- item 1

def test_outdir_through_dotdot_onto_the_inputs_is_refused(tmp_path):
    """Item 1: `-o IN/nonexist/..` is IN itself: refused, nothing created, inputs untouched."""
    d, _ = in_folder(tmp_path)
    before = snapshot(d)
    proc = ns("run", d, "-o", f"{d}/nonexist/..", expect=2)
    assert "holds input" in proc.stderr, proc.stderr
    assert not (d / "nonexist").exists(), "the refused run created IN/nonexist"
    assert snapshot(d) == before, "inputs changed"
    assert sorted(p.name for p in d.iterdir()) == ["a.nii.gz", "b.nii.gz"]


@needs_root
def test_outdir_bind_mounted_onto_the_inputs_is_refused(tmp_path):
    """Item 1: a bind mount of IN elsewhere, given as OUTDIR, is refused (same files, other path)."""
    d, _ = in_folder(tmp_path)
    before = snapshot(d)
    alias = tmp_path / "alias"
    alias.mkdir()
    m = subprocess.run(["mount", "--bind", str(d), str(alias)], capture_output=True, text=True, timeout=30)
    if m.returncode != 0:
        pytest.skip(f"mount --bind is not permitted here: {m.stderr.strip()}")
    try:
        proc = ns("run", d, "-o", alias, expect=2)
        assert "holds input" in proc.stderr, proc.stderr
        assert snapshot(d) == before, "inputs changed"
    finally:
        subprocess.run(["umount", str(alias)], capture_output=True, timeout=30)


# ---------------------------------------------------------------- item 2

@pytest.mark.parametrize("flag,victim", [("--report", "a.nii.gz"), ("--csv", "b.nii.gz")])
def test_report_or_csv_onto_an_input_is_refused(tmp_path, flag, victim):
    """Item 2: --report / --csv naming an input file is refused, naming the flag and the file."""
    d, _ = in_folder(tmp_path)
    before = snapshot(d)
    out = tmp_path / "out"
    proc = ns("run", d, "-o", out, flag, d / victim, expect=2)
    assert flag in proc.stderr and victim in proc.stderr, proc.stderr
    assert snapshot(d) == before, "an input was overwritten"
    assert no_image_outputs(out)


def test_report_and_csv_onto_the_same_file_are_refused(tmp_path):
    """Item 2: --report X --csv X (one file, two writers) is refused, naming both flags."""
    d, _ = in_folder(tmp_path)
    x = tmp_path / "x.json"
    proc = ns("run", d, "-o", tmp_path / "out", "--report", x, "--csv", x, expect=2)
    assert "--report" in proc.stderr and "--csv" in proc.stderr, proc.stderr


def test_report_onto_an_output_of_the_run_is_refused(tmp_path):
    """Item 2: --report OUT/a.nii.gz, where this run writes a.nii.gz, is refused."""
    d, _ = in_folder(tmp_path)
    before = snapshot(d)
    out = tmp_path / "out"
    proc = ns("run", d, "-o", out, "--report", out / "a.nii.gz", expect=2)
    assert "--report" in proc.stderr, proc.stderr
    assert snapshot(d) == before


def test_report_in_a_missing_folder_is_refused_before_any_work(tmp_path):
    """Item 2: a report whose folder is missing is refused up front (not after every image,
    and without naming a temp file)."""
    d, _ = in_folder(tmp_path)
    out = tmp_path / "out"
    proc = ns("run", d, "-o", out, "--report", tmp_path / "missing_dir" / "r.json", expect=2)
    assert "missing_dir" in proc.stderr, proc.stderr
    assert ".tmp" not in proc.stderr, proc.stderr
    assert no_image_outputs(out), f"outputs written before the refusal: {names(out)}"
    assert not (tmp_path / "missing_dir").exists()


# ---------------------------------------------------------------- item 3

def test_a_symlinked_input_that_is_its_own_output_is_refused(tmp_path):
    """Item 3: IN2/x.nii.gz -> ../OUT/x.nii.gz: the output would replace the input it reads."""
    out = tmp_path / "out"
    out.mkdir()
    real = save(out / "x.nii.gz", noise(SHAPE, "float32", 3))
    before = real.read_bytes()
    in2 = tmp_path / "in2"
    in2.mkdir()
    (in2 / "x.nii.gz").symlink_to(Path("..") / "out" / "x.nii.gz")
    proc = ns("run", in2, "-o", out, expect=2)
    assert "holds input" in proc.stderr, proc.stderr
    assert real.read_bytes() == before and not real.is_symlink()
    assert (in2 / "x.nii.gz").is_symlink()


# ---------------------------------------------------------------- item 4

BAD_NAME = b"b\xffd.nii.gz"


def non_utf8_folder(tmp_path):
    """IN holding a.nii.gz and b\\xffd.nii.gz (a name that is not UTF-8)."""
    d = tmp_path / "in"
    d.mkdir()
    save(d / "a.nii.gz", noise(SHAPE, "float32", 1))
    tmp = save(tmp_path / "tmp.nii.gz", noise(SHAPE, "float32", 2))
    os.rename(tmp, os.path.join(os.fsencode(d), BAD_NAME))
    return d


def test_a_name_that_is_not_utf8_keeps_its_bytes(tmp_path):
    """Item 4: the output of b\\xffd.nii.gz has exactly that byte name, and is exact."""
    d = non_utf8_folder(tmp_path)
    out = tmp_path / "out"
    ns("run", d, "-o", out)
    got = sorted(n for n in os.listdir(os.fsencode(out)) if not n.startswith(b"."))
    assert got == sorted([b"a.nii.gz", BAD_NAME]), got
    src = os.fsdecode(os.path.join(os.fsencode(d), BAD_NAME))
    dst = os.fsdecode(os.path.join(os.fsencode(out), BAD_NAME))
    assert_exact(dst, scipy_ref(src, 2.0))
    assert_exact(out / "a.nii.gz", scipy_ref(d / "a.nii.gz", 2.0))


def mpirun_ranks(ranks, args, exits, timeout=60):
    """test_mpi's `mpirun` (each rank's exit code), a timeout failing the test."""
    try:
        return mpirun_each_rank(ranks, args, exits, timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    pytest.fail(f"mpirun -n {ranks} {' '.join(map(str, args))} did not end within {timeout} s")


@needs_mpi
def test_a_name_that_is_not_utf8_under_mpi(tmp_path):
    """Item 4: the same folder on 2 ranks: exit 0 within 60 s, both outputs."""
    d = non_utf8_folder(tmp_path)
    out = tmp_path / "out"
    codes, proc = mpirun_ranks(2, ["run", d, "-o", out, "--threads", "1", "--progress", "none",
                                   "--schedule", "cyclic"], tmp_path / "exits", timeout=60)
    assert set(codes.values()) == {0}, f"{codes}\n{proc.stderr}"
    got = sorted(n for n in os.listdir(os.fsencode(out)) if not n.startswith(b"."))
    assert got == sorted([b"a.nii.gz", BAD_NAME]), got


def session_members(sid):
    """Live (not zombie) processes whose session is `sid`."""
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(p.name))
    return found


def mpirun_direct(args, env, timeout=60):
    """`mpirun -n 2 BIN ARGS` without test_mpi's per-rank shell wrapper (the
    wrapper would hide a rank's panic from mpirun). In a session of its own:
    after it returns, no process of it may be left; on a timeout all are killed."""
    cmd = [*mpi_launch(2), str(BIN), *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", env={**MPI_ENV, **env}, start_new_session=True)
    deadline = time.time() + timeout
    try:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            err = None
        if err is None:
            pytest.fail(f"mpirun {' '.join(map(str, args))} ({env}) did not end within {timeout} s")
        while session_members(proc.pid) and time.time() < deadline:
            time.sleep(0.1)
        left = session_members(proc.pid)
        assert not left, f"processes left after mpirun ended: {left}"
        return proc.returncode, err
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_mpi
@pytest.mark.parametrize("inject", ["plan:1", "plan:0", "gather:1"])
def test_a_panicking_rank_ends_the_whole_mpi_run(tmp_path, inject):
    """Item 4: a panic on one rank (planning, or just before the gather) ends every
    process within 60 s with a nonzero exit code; nobody waits forever in a collective.
    (Plain names here: the panic is injected, so that its cause is the only one.)"""
    d, _ = in_folder(tmp_path)
    code, err = mpirun_direct(["run", d, "-o", tmp_path / "out", "--threads", "1", "--progress", "none"],
                              {"NISMOOTH_INJECT_PANIC": inject})
    assert code != 0, f"NISMOOTH_INJECT_PANIC={inject}: exit 0\n{err}"


@needs_mpi
def test_a_report_in_a_missing_folder_under_mpi(tmp_path):
    """Item 4: 2 ranks with --report in a missing folder: every rank exits 2 within 60 s,
    before any image is written."""
    d, _ = in_folder(tmp_path)
    out, report = tmp_path / "out", tmp_path / "nonexistent_dir" / "r.json"
    codes, proc = mpirun_ranks(2, ["run", d, "-o", out, "--threads", "1", "--progress", "none",
                                   "--report", report], tmp_path / "exits", timeout=60)
    assert set(codes.values()) == {2}, f"{codes}\n{proc.stderr}"
    assert no_image_outputs(out), f"outputs written before the refusal: {names(out)}"


# ---------------------------------------------------------------- item 5

def with_pixdim(path, value):
    """Patches pixdim[1..3] (bytes 80..92, little-endian float32) in the raw header."""
    raw = bytearray(read_bytes(path))
    struct.pack_into("<3f", raw, 80, value, value, value)
    write_bytes(path, bytes(raw))
    return path


@pytest.mark.parametrize("pixdim", [1e-6, 1e-30])
def test_a_tiny_voxel_with_units_mm_fails_that_image_only(tmp_path, pixdim):
    """Item 5: σ 2 mm over voxels of 1e-6 (or 1e-30) mm is a kernel without a bound:
    that image fails fast ("kernel radius"), the other is done."""
    d = tmp_path / "in"
    d.mkdir()
    with_pixdim(save(d / "tiny.nii", noise(SHAPE, "float32", 1)), pixdim)
    save(d / "normal.nii", noise(SHAPE, "float32", 2))
    report = tmp_path / "r.json"
    ns("run", d, "-o", tmp_path / "out", "--units", "mm", "--report", report, expect=1, timeout=20)
    rec = records(report)
    assert rec["tiny.nii"]["status"] == "failed", rec["tiny.nii"]
    assert "kernel radius" in rec["tiny.nii"]["error"], rec["tiny.nii"]["error"]
    assert rec["normal.nii"]["status"] == "ok", rec["normal.nii"]


@pytest.mark.parametrize("option,value", [("--sigma", "1e20"), ("--sigma", "1e6"), ("--truncate", "1e300")])
def test_a_kernel_without_a_bound_is_refused_up_front(tmp_path, option, value):
    """Item 5: --sigma 1e20 / 1e6, --truncate 1e300: refused (exit 2, "kernel radius") within 10 s."""
    d, _ = in_folder(tmp_path, n=1)
    out = tmp_path / "out"
    proc = ns("run", d, "-o", out, option, value, expect=2, timeout=10)
    assert "kernel radius" in proc.stderr, proc.stderr
    assert no_image_outputs(out)


def test_a_negative_cval_as_a_separate_argument(tmp_path):
    """Item 5: `--cval -7.5` (two arguments) is a value, not an unknown flag."""
    d, (src,) = in_folder(tmp_path, n=1)
    out = tmp_path / "out"
    ns("run", d, "-o", out, "--mode", "constant", "--cval", "-7.5")
    assert_exact(out / src.name, scipy_ref(src, 2.0, mode="constant", cval=-7.5))


# ---------------------------------------------------------------- item 6

def test_a_fifo_named_on_the_command_line_fails_alone(tmp_path):
    """Item 6: a FIFO given as an input is never opened (it would block): it fails
    with "not a regular file", the good image is done, exit 1 within 20 s."""
    d, (good,) = in_folder(tmp_path, n=1)
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    out, report = tmp_path / "out", tmp_path / "r.json"
    ns("run", good, fifo, "-o", out, "--report", report, expect=1, timeout=20)
    rec = records(report)
    assert rec["pipe.nii.gz"]["status"] == "failed", rec["pipe.nii.gz"]
    assert "not a regular file" in rec["pipe.nii.gz"]["error"], rec["pipe.nii.gz"]["error"]
    assert rec[good.name]["status"] == "ok"
    assert_exact(out / good.name, scipy_ref(good, 2.0))
    assert names(out) == [good.name]


def test_a_fifo_inside_an_input_folder_is_skipped(tmp_path):
    """Item 6: a FIFO named *.nii.gz in an input folder is skipped (said on stderr), never opened."""
    d, (good,) = in_folder(tmp_path, n=1)
    os.mkfifo(d / "pipe.nii.gz")
    out = tmp_path / "out"
    # The exit code is not the point here (0, or 1 should the skip count as a failure).
    proc = ns("run", d, "-o", out, expect=None, timeout=20)
    assert proc.returncode in (0, 1), f"exit {proc.returncode}\n{proc.stderr}"
    # Said on a line naming it (the summary's "0 skipped" does not count).
    assert any("pipe.nii.gz" in l and "skipped" in l for l in proc.stderr.splitlines()), proc.stderr
    assert names(out) == [good.name]
    assert_exact(out / good.name, scipy_ref(good, 2.0))


# ---------------------------------------------------------------- item 7

@pytest.mark.parametrize("option,value,word", [("--sigma", "5", "sigma"), ("--dtype", "float32", "dtype")])
def test_resume_with_other_options_is_refused(tmp_path, option, value, word):
    """Item 7: --resume after a run with other options would keep outputs of the old
    options beside new ones: refused, naming --resume and the option; outputs unchanged."""
    d, _ = in_folder(tmp_path, dtype="int16")
    out = tmp_path / "out"
    ns("run", d, "-o", out)
    before = images(out)
    proc = ns("run", d, "-o", out, "--resume", option, value, expect=2)
    assert "--resume" in proc.stderr and word in proc.stderr, proc.stderr
    assert images(out) == before


def test_resume_from_other_inputs_redoes_every_output(tmp_path):
    """Item 7: --resume with another input folder (same names and shapes, other voxels)
    redoes every output from the new inputs instead of keeping the old ones."""
    d, _ = in_folder(tmp_path, dtype="int16")
    d_b, srcs_b = in_folder(tmp_path, dtype="int16", name="in_b", seed=50)
    out = tmp_path / "out"
    ns("run", d, "-o", out)
    ns("run", d_b, "-o", out, "--resume")
    assert names(out) == [p.name for p in srcs_b]
    for p in srcs_b:
        assert_exact(out / p.name, scipy_ref(p, 2.0))


# ---------------------------------------------------------------- item 8

def test_resume_redoes_an_output_whose_gzip_trailer_was_cut(tmp_path):
    """Item 8: an output missing its last 4 bytes (ISIZE) is not complete: --resume redoes it."""
    d, srcs = in_folder(tmp_path)
    out = tmp_path / "out"
    ns("run", d, "-o", out)
    cut = out / "a.nii.gz"
    cut.write_bytes(cut.read_bytes()[:-4])
    other = (out / "b.nii.gz").read_bytes()
    ns("run", d, "-o", out, "--resume")
    gzip.decompress(cut.read_bytes())  # whole again: CRC and length check
    assert_exact(cut, scipy_ref(srcs[0], 2.0))
    assert (out / "b.nii.gz").read_bytes() == other


def test_an_input_whose_gzip_trailer_was_cut_fails(tmp_path):
    """Item 8: inputs cut by 1..8 bytes (only CRC-32/ISIZE missing) each fail with a gzip error."""
    d, (good,) = in_folder(tmp_path, n=1)
    whole = good.read_bytes()
    for k in range(1, 9):
        (d / f"cut{k}.nii.gz").write_bytes(whole[:-k])
    out, report = tmp_path / "out", tmp_path / "r.json"
    ns("run", d, "-o", out, "--report", report, expect=1)
    rec = records(report)
    for k in range(1, 9):
        r = rec[f"cut{k}.nii.gz"]
        assert r["status"] == "failed" and "gzip" in (r["error"] or ""), (k, r["status"], r["error"])
    assert rec[good.name]["status"] == "ok"
    assert names(out) == [good.name]
    assert_exact(out / good.name, scipy_ref(good, 2.0))


# ---------------------------------------------------------------- item 9

@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    """40 float32 .nii.gz images of 96x96x64."""
    d = tmp_path_factory.mktemp("big") / "in"
    subprocess.run([str(BIN), "generate", "-o", str(d), "-n", "40", "--shape", "96,96,64", "--seed", "9"],
                   check=True, capture_output=True, timeout=120)
    return d


# One thread and gzip level 6: a run of the 40 images lasts a few seconds.
SLOW = ["--threads", "1", "--compression-level", "6", "--progress", "none"]


@contextmanager
def locked_run(src, out, log_path, timeout=30):
    """Starts a run of `src` into `out` and yields it once its lock exists
    (asserting that it appears); kills the run on the way out if it is still going."""
    lock = out / ".nismooth" / "lock"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(BIN), "run", str(src), "-o", str(out), *SLOW], stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + timeout
            while time.time() < deadline and proc.poll() is None and not lock.exists():
                time.sleep(0.005)
            assert lock.exists(), f"no {lock} while the run ran (exit {proc.poll()})"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_a_second_run_into_a_locked_outdir_is_refused(tmp_path, big_inputs):
    """Item 9: while run A writes into OUT (OUT/.nismooth/lock), run B into OUT, and a
    --resume into OUT, are refused naming the lock and A's pid; A ends well; the lock goes."""
    out = tmp_path / "out"
    lock = out / ".nismooth" / "lock"
    with locked_run(big_inputs, out, tmp_path / "a.log") as a:
        b = ns("run", big_inputs, "-o", out, *SLOW, expect=2)
        assert "lock" in b.stderr and str(a.pid) in b.stderr, b.stderr
        r = ns("run", big_inputs, "-o", out, *SLOW, "--resume", expect=2)
        assert "lock" in r.stderr and str(a.pid) in r.stderr, r.stderr
        assert a.poll() is None, "run A ended before B and the --resume were tried: make it longer"
        assert a.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    inputs = sorted(p.name for p in big_inputs.iterdir())
    assert names(out) == inputs, "every output, no temp file"
    for n in (inputs[0], inputs[len(inputs) // 2], inputs[-1]):
        assert_exact(out / n, scipy_ref(big_inputs / n, 2.0))
    assert not lock.exists(), "run A left its lock"


def test_a_stale_lock_does_not_block_resume(tmp_path, big_inputs):
    """Item 9: the lock of a run killed with -9 is stale (its process is gone): --resume goes on."""
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(big_inputs.iterdir())[:10]:
        os.link(p, src / p.name)
    out = tmp_path / "out"
    lock = out / ".nismooth" / "lock"
    with locked_run(src, out, tmp_path / "a.log") as a:
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
    assert lock.exists(), "kill -9 cannot remove the lock; the test needs it stale"
    ns("run", src, "-o", out, *SLOW, "--resume", timeout=120)
    assert names(out) == sorted(p.name for p in src.iterdir())
    assert not lock.exists()


# ---------------------------------------------------------------- item 10

def strace_events(log):
    """("sync", None) for each fsync/fdatasync/syncfs that returned 0, ("rename", target) for
    each successful rename*, in the order they completed (strace -f joins
    <unfinished ...> with its <... resumed> line)."""
    events, pending = [], {}
    for line in log.splitlines():
        m = re.match(r"(\d+)\s+(.*)$", line)
        if not m:
            continue
        pid, rest = m.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        resumed = re.match(r"<\.\.\. (\w+) resumed>(.*)$", rest)
        if resumed:
            rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        call = re.match(r"(\w+)\((.*)\)\s*=\s*(-?\d+)", rest)
        if not call or call.group(3) != "0":
            continue
        name, args = call.group(1), call.group(2)
        if name in ("fsync", "fdatasync", "syncfs"):
            events.append(("sync", None))
        elif name.startswith("rename"):
            paths = re.findall(r'"((?:[^"\\]|\\.)*)"', args)
            if paths:
                events.append(("rename", paths[-1]))
    return events


@pytest.mark.parametrize("sync", [True, False], ids=["synced", "no-sync"])
def test_outputs_are_synced_before_their_rename_and_the_folder_after(tmp_path, sync):
    """Item 10: under strace, each output's data is fsynced before the rename that
    makes it appear, and something (the folder) is fsynced after the last one;
    with --no-sync, nothing is synced and the outputs are still whole."""
    if shutil.which("strace") is None:
        pytest.skip("no strace")
    d, _ = in_folder(tmp_path, n=3)
    out, log = tmp_path / "out", tmp_path / "strace.log"
    cmd = ["strace", "-f", "-s", "4096", "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
           "-o", str(log), str(BIN), "run", str(d), "-o", str(out), "--threads", "1"]
    cmd += [] if sync else ["--no-sync"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    outs = names(out)
    assert outs == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    events = strace_events(log.read_text())
    # Position of the rename onto each output (the last one, should there be several).
    at = {}
    for i, (kind, target) in enumerate(events):
        if kind == "rename" and os.path.basename(target) in outs and os.path.dirname(target).endswith("out"):
            at[os.path.basename(target)] = i
    assert sorted(at) == outs, f"outputs not renamed into place: {events}"
    if not sync:
        assert not any(kind == "sync" for kind, _ in events), events
        for n in outs:
            assert_exact(out / n, scipy_ref(d / n, 2.0))
        return
    for k, (name, i) in enumerate(sorted(at.items(), key=lambda kv: kv[1])):
        syncs = sum(kind == "sync" for kind, _ in events[:i])
        assert syncs >= k + 1, f"{name}: {syncs} fsyncs before the rename of output #{k + 1}\n{events}"
    last = max(at.values())
    assert any(kind == "sync" for kind, _ in events[last + 1:]), f"no fsync after the last rename\n{events}"


def test_small_outputs_share_their_syncs(tmp_path):
    """Item 10, the cost: 200 tiny images are put in place in a few batches, each with one sync
    of the data and one of the folder, not a journal commit per image (before the commit
    window: 218 fdatasync and 134 folder fsync for 300 images)."""
    if shutil.which("strace") is None:
        pytest.skip("no strace")
    d = tmp_path / "in"
    d.mkdir()
    for i in range(200):
        save(d / f"t{i:03d}.nii.gz", noise((8, 8, 8), "int16", i))
    out, log = tmp_path / "out", tmp_path / "strace.log"
    # --seccomp-bpf stops the process only at the traced calls: timed as without strace.
    cmd = ["strace", "--seccomp-bpf", "-f", "-e", "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2",
           "-o", str(log), str(BIN), "run", str(d), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert len(names(out)) == 200
    events = strace_events(log.read_text())
    syncs = sum(kind == "sync" for kind, _ in events)
    assert sum(kind == "rename" for kind, _ in events) >= 200
    # Typically 6-12; the bound leaves room for a loaded machine, far below one per image.
    assert syncs <= 60, f"{syncs} syncs for 200 tiny outputs"


# ---------------------------------------------------------------- smaller items

def test_a_hash_inside_a_listed_name_is_part_of_the_name(tmp_path):
    """Smaller: in --list, only a line starting with '#' is a comment; 'dir/a#1.nii.gz' is a file."""
    (tmp_path / "dir").mkdir()
    src = save(tmp_path / "dir" / "a#1.nii.gz", noise(SHAPE, "float32", 1))
    save(tmp_path / "dir" / "b.nii.gz", noise(SHAPE, "float32", 2))
    # Relative lines: the list sits in the working directory, so either base gives the same file.
    (tmp_path / "list.txt").write_text("# dir/b.nii.gz is commented out\ndir/a#1.nii.gz\n#dir/b.nii.gz\n")
    out = tmp_path / "out"
    ns("run", "--list", tmp_path / "list.txt", "-o", out, cwd=tmp_path)
    assert names(out) == ["a#1.nii.gz"]
    assert_exact(out / "a#1.nii.gz", scipy_ref(src, 2.0))


def test_a_broken_symlink_in_an_input_folder_fails_by_name(tmp_path):
    """Smaller: IN/gone.nii.gz -> nowhere is not silently dropped: it fails, named, exit 1."""
    d, (good,) = in_folder(tmp_path, n=1)
    (d / "gone.nii.gz").symlink_to("nowhere")
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = ns("run", d, "-o", out, "--report", report, expect=1)
    rec = records(report)
    assert "gone.nii.gz" in rec and rec["gone.nii.gz"]["status"] == "failed", rec
    assert rec[good.name]["status"] == "ok"
    assert "gone.nii.gz" in proc.stderr, proc.stderr
    assert "skipped" in proc.stderr.lower() or "failed" in proc.stderr.lower(), proc.stderr


def test_a_wrong_magic_is_shown_with_its_trailing_space(tmp_path):
    """Smaller: magic b"n+1 " is shown quoted with the space inside, not as "n+1" (which reads as
    the expected magic)."""
    d, (good,) = in_folder(tmp_path, n=1)
    bad = save(d / "space.nii", noise(SHAPE, "float32", 4))
    raw = bytearray(bad.read_bytes())
    raw[344:348] = b"n+1 "
    bad.write_bytes(bytes(raw))
    report = tmp_path / "r.json"
    proc = ns("run", d, "-o", tmp_path / "out", "--report", report, expect=1)
    err = records(report)["space.nii"]["error"]
    assert re.search(r"""["']n\+1 ["']""", err), err
    assert 'magic is "n+1", expected "n+1"' not in err and 'magic is "n+1", expected "n+1"' not in proc.stderr


def test_a_voxel_count_beyond_u64_is_not_shown_as_u64_max(tmp_path):
    """Smaller: dims 7, 32767 x 7 overflow a u64 count; the error must not print 18446744073709551615."""
    d, (good,) = in_folder(tmp_path, n=1)
    bad = save(d / "huge.nii", noise(SHAPE, "float32", 5))
    raw = bytearray(bad.read_bytes())
    struct.pack_into("<8h", raw, 40, 7, *[32767] * 7)
    bad.write_bytes(bytes(raw))
    report = tmp_path / "r.json"
    proc = ns("run", d, "-o", tmp_path / "out", "--report", report, expect=1)
    rec = records(report)
    assert rec["huge.nii"]["status"] == "failed"
    assert "18446744073709551615" not in rec["huge.nii"]["error"], rec["huge.nii"]["error"]
    assert "18446744073709551615" not in proc.stderr
    assert rec[good.name]["status"] == "ok"


def test_a_refused_run_does_not_create_its_outdir(tmp_path):
    """Smaller: a run refused up front (no inputs in an empty folder) leaves no new OUTDIR."""
    (tmp_path / "empty").mkdir()
    ns("run", tmp_path / "empty", "-o", tmp_path / "newout", expect=2)
    assert not (tmp_path / "newout").exists()


def test_a_tiny_file_claiming_a_huge_scaled_image_fails_alone_within_the_memory_limit(tmp_path):
    """Smaller: a ~130 kB .nii.gz whose header claims 512³ int8 voxels with scl_slope
    (held as float64: 1 GiB) is refused by name before it is allocated when the process may
    not take that much (here `ulimit -v` 1 GiB; a Slurm cgroup alike), and the other image
    is still smoothed. Before: the allocation aborted the whole run. (With `--mode wrap`: in any
    other mode a 3-D image this large is now filtered in z-slabs and fits, tests/python/test_any_size.py.)"""
    import resource
    d, (good,) = in_folder(tmp_path, n=1)
    hdr = bytearray(read_bytes(save(tmp_path / "h.nii", noise(SHAPE, "int8", 6)))[:352])
    struct.pack_into("<8h", hdr, 40, 3, 512, 512, 512, 1, 1, 1, 1)
    struct.pack_into("<2f", hdr, 112, 2.0, 1.0)  # scl_slope, scl_inter
    with gzip.open(d / "bomb.nii.gz", "wb", compresslevel=9) as f:
        f.write(bytes(hdr))
        for _ in range(64):
            f.write(bytes(512 * 512 * 8))
    assert (d / "bomb.nii.gz").stat().st_size < 200_000
    report = tmp_path / "r.json"
    limit = 1 << 30
    proc = subprocess.run(
        [str(BIN), "run", str(d), "-o", str(tmp_path / "out"), "--report", str(report), "--mode", "wrap"],
        capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 1, proc.stderr
    rec = records(report)
    err = rec["bomb.nii.gz"]["error"]
    assert rec["bomb.nii.gz"]["status"] == "failed" and "MiB" in err and "ulimit -v" in err, err
    assert "float64" in err, err
    assert rec[good.name]["status"] == "ok"
    assert not (tmp_path / "out" / "bomb.nii.gz").exists()
