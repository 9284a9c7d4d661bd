"""The MPI driver under a real `mpirun` (OpenMPI, or MPICH's Hydra with
NISMOOTH_MPIRUN), 1 to 4 ranks, oversubscribed.

For every schedule: each image is processed exactly once, the outputs are
byte-identical to a single-process run, the report holds every rank, and all
ranks exit with the same code. A corrupt image assigned to rank 1 neither
hangs nor stops the others; more ranks than images works; a refusal on root
ends every rank with exit code 2. Every run has a timeout: a hang fails.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, MPIRUN, RANK_VAR, mpi_launch, names, outputs

pytestmark = pytest.mark.skipif(
    MPIRUN is None and os.environ.get("NISMOOTH_REQUIRE_MPI") != "1",
    reason="no mpirun (CI sets NISMOOTH_REQUIRE_MPI=1 so that this cannot pass silently)",
)
SCHEDULES = ["block", "cyclic", "balanced", "dynamic"]
ENV = dict(
    os.environ,
    OMPI_ALLOW_RUN_AS_ROOT="1",
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
    OMPI_MCA_rmaps_base_oversubscribe="1",
    RUST_LOG="warn",
)


def mpirun(ranks, args, exits, timeout=120):
    """Runs nismooth on `ranks` ranks; each rank's exit code lands in `exits`."""
    exits.mkdir(parents=True, exist_ok=True)
    wrapper = 'st=0; "$0" "$@" || st=$?; echo $st > "$EXITS/%s"' % RANK_VAR
    cmd = [*mpi_launch(ranks), "sh", "-c", wrapper, str(BIN), *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(ENV, EXITS=str(exits)))
    codes = {int(p.name): int(p.read_text()) for p in exits.iterdir()}
    assert sorted(codes) == list(range(ranks)), f"missing ranks: {codes}\n{proc.stderr}"
    return codes, proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Seven images of different sizes, and the single-process outputs."""
    root = tmp_path_factory.mktemp("mpi")
    gen = [str(BIN), "generate", "-o", root / "in", "-n", "7", "--shape", "20,18,12", "--vary-size", "--seed", "7"]
    subprocess.run(list(map(str, gen)), check=True, capture_output=True)
    single = root / "single"
    subprocess.run(
        [str(BIN), "run", str(root / "in"), "-o", str(single), "--progress", "none"],
        check=True, capture_output=True, env=ENV,
    )
    return root


def lpt(costs, ranks):
    """Graham's rule as nismooth documents it: largest first to the least-loaded, ties to the lowest rank/index."""
    loads = [0] * ranks
    owner = {}
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(ranks), key=lambda r: (loads[r], r))
        owner[i] = r
        loads[r] += costs[i]
    return owner


def expected_owner(schedule, costs, ranks):
    n = len(costs)
    if schedule == "cyclic":
        return {i: i % ranks for i in range(n)}
    if schedule == "block":
        base, extra = divmod(n, ranks)
        sizes = [base + (r < extra) for r in range(ranks)]
        starts = [sum(sizes[:r]) for r in range(ranks)]
        return {i: max(r for r in range(ranks) if starts[r] <= i and sizes[r] > 0) for i in range(n)}
    if schedule == "balanced":
        return lpt(costs, ranks)
    return None  # dynamic: decided at run time


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_image_once_identical_outputs(dataset, tmp_path, ranks, schedule):
    out, report = tmp_path / "out", tmp_path / "report.json"
    codes, proc = mpirun(ranks, ["run", dataset / "in", "-o", out, "--schedule", schedule,
                                 "--threads", "1", "--progress", "none", "--report", report], tmp_path / "exits")
    assert set(codes.values()) == {0}, proc.stderr
    r = json.loads(report.read_text())
    assert [i["index"] for i in r["images"]] == list(range(7))
    assert all(i["status"] == "ok" for i in r["images"])
    assert sorted(p["rank"] for p in r["processes"]) == list(range(ranks))
    assert r["parallel"]["ranks"] == ranks and r["parallel"]["schedule"] == schedule
    assert r["parallel"]["comm"].startswith("MPI")
    # Each rank's totals agree with the images recorded against it.
    for p in r["processes"]:
        mine = [i for i in r["images"] if i["rank"] == p["rank"]]
        assert p["images"] == len(mine)
        assert p["voxels"] == sum(i["voxels"] for i in mine)
    owner = expected_owner(schedule, [i["voxels"] for i in r["images"]], ranks)
    if owner is not None:
        assert {i["index"]: i["rank"] for i in r["images"]} == owner
    single = outputs(dataset / "single")
    assert names(out) == [p.name for p in single]
    for s in single:
        assert (out / s.name).read_bytes() == s.read_bytes(), s.name


@pytest.mark.parametrize("ranks,schedule", [(2, "cyclic"), (3, "cyclic"), (3, "dynamic"), (4, "block")])
def test_corrupt_image_on_rank_1_neither_hangs_nor_stops_others(dataset, tmp_path, ranks, schedule):
    src = tmp_path / "in"
    shutil.copytree(dataset / "in", src)
    inputs = names(src)
    # Index 1 belongs to rank 1 under cyclic; under block with 4 ranks, index 2 does.
    bad = inputs[2] if schedule == "block" else inputs[1]
    (src / bad).write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    out, report = tmp_path / "out", tmp_path / "report.json"
    codes, proc = mpirun(ranks, ["run", src, "-o", out, "--schedule", schedule, "--threads", "1",
                                 "--progress", "none", "--report", report], tmp_path / "exits")
    assert set(codes.values()) == {1}, f"every rank exits 1: {codes}\n{proc.stderr}"
    r = json.loads(report.read_text())
    failed = [i for i in r["images"] if i["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["input"].endswith(bad)
    assert bad in failed[0]["error"] or "gzip" in failed[0]["error"].lower()
    if schedule != "dynamic":
        assert failed[0]["rank"] == 1
    assert sum(i["status"] == "ok" for i in r["images"]) == len(inputs) - 1
    assert names(out) == sorted(n for n in inputs if n != bad), "no temp files"


def test_more_ranks_than_images(dataset, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in sorted(p.name for p in (dataset / "in").iterdir())[:2]:
        shutil.copy(dataset / "in" / name, src / name)
    for schedule in SCHEDULES:
        out, report = tmp_path / schedule, tmp_path / f"{schedule}.json"
        codes, proc = mpirun(4, ["run", src, "-o", out, "--schedule", schedule, "--threads", "1",
                                 "--progress", "none", "--report", report], tmp_path / f"exits-{schedule}")
        assert set(codes.values()) == {0}, proc.stderr
        r = json.loads(report.read_text())
        assert [i["index"] for i in r["images"]] == [0, 1]
        assert len(r["processes"]) == 4
        assert sum(p["images"] for p in r["processes"]) == 2


def test_refusal_on_root_ends_every_rank_with_code_2(dataset, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(dataset / "in", src)
    codes, proc = mpirun(3, ["run", src, "-o", src, "--progress", "none"], tmp_path / "exits")
    assert set(codes.values()) == {2}, codes
    assert "holds input" in proc.stderr


def test_a_backend_that_cannot_start_ends_every_rank_with_code_2(dataset, tmp_path):
    # No GPU here: every rank fails to start CUDA, and the ranks agree (an
    # allreduce) to stop together before the first collective of the run.
    codes, proc = mpirun(3, ["run", dataset / "in", "-o", tmp_path / "out", "--backend", "cuda"], tmp_path / "exits")
    assert set(codes.values()) == {2}, codes
    assert proc.stderr.count("--backend cuda: ") == 3, proc.stderr
    assert not (tmp_path / "out").exists()


def test_singleton_mpi_runs_as_one_rank(dataset, tmp_path):
    """The MPI build, asked to initialise MPI without a launcher, is one rank."""
    out, report = tmp_path / "out", tmp_path / "r.json"
    subprocess.run([str(BIN), "run", str(dataset / "in"), "-o", str(out), "--progress", "none",
                    "--report", str(report)], check=True, capture_output=True, timeout=120,
                   env=dict(ENV, NISMOOTH_MPI="force"))
    r = json.loads(report.read_text())
    assert r["parallel"]["comm"].startswith("MPI, 1 rank")
    assert len(r["images"]) == 7


def test_default_threads_share_the_node(dataset, tmp_path):
    """Without --threads or SLURM_CPUS_PER_TASK, each rank gets cores / ranks on the node (at least 1)."""
    out, report = tmp_path / "out", tmp_path / "r.json"
    env = {k: v for k, v in ENV.items() if k != "SLURM_CPUS_PER_TASK"}
    proc = subprocess.run([*mpi_launch(2, "--bind-to", "none"), str(BIN), "run", str(dataset / "in"),
                           "-o", str(out), "--progress", "none", "--report", str(report)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    want = max(1, os.cpu_count() // 2)
    assert [p["threads"] for p in r["processes"]] == [want, want]
    assert "ranks on the node" in r["config"]["threads_from"]


def journal_lines(out, rank=None):
    pattern = f"journal-*-rank{rank}.jsonl" if rank is not None else "journal-*.jsonl"
    lines = []
    for p in sorted((out / ".nismooth").glob(pattern)):
        for text in p.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                pass  # a partial last line from a killed writer
    return lines


def test_kill_9_one_rank_then_resume_redoes_only_the_missing(tmp_path):
    """kill -9 rank 1 in the middle of a 2-rank run: every output left is
    whole, the journals keep the finished images' records, and `--resume`
    (on another schedule) redoes exactly the images without a complete output,
    including one cut short by hand, and trusts a touched one only after
    reading it back."""
    import signal
    import time

    src, out, single = tmp_path / "in", tmp_path / "out", tmp_path / "single"
    gen = [BIN, "generate", "-o", src, "-n", "20", "--shape", "96,96,64", "--seed", "11"]
    subprocess.run(list(map(str, gen)), check=True, capture_output=True)
    common = ["--threads", "1", "--compression-level", "6", "--progress", "none"]
    subprocess.run(list(map(str, [BIN, "run", src, "-o", single, *common])), check=True, capture_output=True, env=ENV)
    all_names = names(single)

    cmd = [*mpi_launch(2), str(BIN), "run", str(src), "-o", str(out),
           "--schedule", "cyclic", *common]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    victim = None
    while time.time() < deadline:
        lines = journal_lines(out, rank=1)
        if sum(l["kind"] == "image" for l in lines) >= 2:
            victim = next(l["pid"] for l in lines if l["kind"] == "start")
            break
        time.sleep(0.01)
    assert victim is not None, "rank 1 never journaled two images"
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode != 0

    left = [n for n in names(out) if not n.startswith(".")]
    print(f"killed rank 1 (pid {victim}): {len(left)} outputs whole, temp files {[n for n in names(out) if n.startswith('.')]}")
    assert 0 < len(left) < len(all_names), f"killed mid-run: {len(left)} of {len(all_names)} written"
    for n in left:
        assert (out / n).read_bytes() == (single / n).read_bytes(), f"{n} is whole"
    journaled = [l for l in journal_lines(out) if l["kind"] == "image"]
    assert journaled and all(l["record"]["status"] == "ok" for l in journaled)
    for l in journaled:
        name = os.path.basename(l["record"]["output"])
        assert name in left and l["stamp"]["bytes"] == (out / name).stat().st_size
        assert l["record"]["filter_s"] > 0 and l["record"]["write_s"] > 0, "timing kept"

    # The killed run's records, recovered from its journals as one report.
    merged = tmp_path / "killed.json"
    journals = sorted((out / ".nismooth").glob("journal-*.jsonl"))
    assert len(journals) == 2
    subprocess.run([str(BIN), "report", "merge", *map(str, journals), "-o", str(merged)], check=True,
                   capture_output=True)
    k = json.loads(merged.read_text())
    assert len(k["processes"]) == 2 and {p["rank"] for p in k["processes"]} == {0, 1}
    assert sorted(os.path.basename(i["output"]) for i in k["images"]) == sorted(
        os.path.basename(l["record"]["output"]) for l in journaled)
    assert k["summary"]["ok"] == len(journaled) and k["summary"]["filter_s"] > 0

    # One complete output touched (its journal stamp no longer matches: no
    # journal vouches for it, so it is made again), one cut short (redone too).
    touched, cut = left[0], left[-1]
    os.utime(out / touched, ns=(1, 1))
    data = (out / cut).read_bytes()
    (out / cut).write_bytes(data[: len(data) // 2])
    # Only journaled outputs are vouched for. A launcher that kills the other
    # rank too (MPICH's Hydra sends SIGKILL) may catch it between a rename
    # and its journal line: that output is whole but unvouched, and is redone.
    vouched = {os.path.basename(l["record"]["output"]) for l in journaled}
    complete = vouched - {cut, touched}

    report = tmp_path / "resume.json"
    codes, proc = mpirun(2, ["run", src, "-o", out, "--resume", "--schedule", "dynamic", "--report", report, *common],
                         tmp_path / "exits")
    assert set(codes.values()) == {0}, proc.stderr
    r = json.loads(report.read_text())
    status = {os.path.basename(i["output"]): i for i in r["images"]}
    assert {n for n, i in status.items() if i["status"] == "skipped"} == complete
    assert {n for n, i in status.items() if i["status"] == "ok"} == set(all_names) - complete
    assert status[touched]["status"] == "ok", "an output no journal vouches for is redone"
    assert all("journal" in status[n]["note"] for n in complete)
    assert {i["rank"] for i in r["images"] if i["status"] == "ok"} == {0, 1}, "both ranks redo work"
    assert names(out) == all_names, "no temp files left"
    for n in all_names:
        assert (out / n).read_bytes() == (single / n).read_bytes(), n
