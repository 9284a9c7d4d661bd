"""nismooth on a real Slurm cluster started by ci/slurm/start.sh.

Run by ci/test.sh twice: with one node (NISMOOTH_SLURM_NODES=1) and with two
simulated nodes in network namespaces (NISMOOTH_SLURM_NODES=2); the tests
marked for the other topology are deselected. Client commands run through
SLURM_CLIENT (the namespace where slurmctld is). Without a cluster these
tests fail rather than skip when NISMOOTH_REQUIRE_SLURM=1 (as in CI).
"""
import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("NISMOOTH_BIN", ROOT / "target" / "release" / "nismooth"))
NODES = int(os.environ.get("NISMOOTH_SLURM_NODES", "0"))
CLIENT = shlex.split(os.environ.get("SLURM_CLIENT", ""))
SLURM_DIR = Path(os.environ.get("NISMOOTH_SLURM_DIR", "/tmp/nismooth-slurm"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", RUST_LOG="info")

if NODES == 0:
    pytestmark = pytest.mark.skipif(
        os.environ.get("NISMOOTH_REQUIRE_SLURM") != "1",
        reason="no cluster: run ci/slurm/start.sh and source its env.sh",
    )
one_node = pytest.mark.skipif(NODES == 2, reason="one-node topology")
two_nodes = pytest.mark.skipif(NODES != 2, reason="two-node topology")


def client(*args, timeout=120, check=True, cwd=None):
    proc = subprocess.run([*CLIENT, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV,
                          cwd=cwd)
    if check:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def submit(script, cwd, *extra):
    """sbatch SCRIPT; waits (polling squeue: `sbatch --wait` polls slowly) until the job and its array tasks end."""
    jid = client("sbatch", "--parsable", f"--chdir={cwd}", *extra, script).stdout.strip().split(";")[0]
    deadline = time.time() + 180
    while time.time() < deadline:
        if not client("squeue", "-h", "-j", jid, check=False).stdout.strip():
            return jid
        time.sleep(0.3)
    raise AssertionError(f"job {jid} still queued or running after 180 s")


def jobcomp(jid):
    """Finished-job records of `jid` (and of each of its array tasks, which jobcomp/filetxt
    records under their own JobId with ArrayJobId={jid}), from jobcomp/filetxt."""
    records = []
    for line in (SLURM_DIR / "jobcomp.txt").read_text().splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if jid in (fields.get("JobId"), fields.get("ArrayJobId")):
            records.append(fields)
    return records


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("slurm")
    subprocess.run([str(BIN), "generate", "-o", str(d / "in"), "-n", "6", "--shape", "20,18,12", "--vary-size",
                    "--seed", "3"], check=True, capture_output=True)
    single = d / "single"
    subprocess.run([str(BIN), "run", str(d / "in"), "-o", str(single), "--progress", "none"], check=True,
                   capture_output=True)
    return d


def outputs(d):
    """File names in an output directory, without nismooth's journal folder."""
    return sorted(p.name for p in Path(d).iterdir() if p.name != ".nismooth")


def outputs_match(out, single):
    names = outputs(single)
    assert outputs(out) == names, "every image once, no temp files"
    for n in names:
        assert (out / n).read_bytes() == (single / n).read_bytes(), n


def test_cluster_is_up():
    assert NODES in (1, 2), "NISMOOTH_SLURM_NODES not set: start the cluster with ci/slurm/start.sh"
    states = client("sinfo", "-h", "-N", "-o", "%N %t").stdout.split("\n")
    assert len([s for s in states if s.strip()]) == NODES


@one_node
def test_srun_pmix_two_ranks_one_node(images, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    client("srun", "--mpi=pmix", "-n", "2", BIN, "run", images / "in", "-o", out, "--threads", "1",
           "--progress", "none", "--report", report)
    r = json.loads(report.read_text())
    assert [i["index"] for i in r["images"]] == list(range(6))
    assert sorted(p["slurm"]["procid"] for p in r["processes"]) == [0, 1]
    assert len({p["slurm"]["job_id"] for p in r["processes"]}) == 1
    assert all(p["slurm"]["ntasks"] == 2 for p in r["processes"])
    assert r["parallel"]["comm"].startswith("MPI, 2 rank")
    outputs_match(out, images / "single")


@one_node
def test_srun_without_pmix_is_refused(images, tmp_path):
    out = tmp_path / "out"
    proc = client("srun", "-n", "2", BIN, "run", images / "in", "-o", out, check=False)
    assert proc.returncode != 0
    assert "--mpi=pmix" in proc.stderr
    assert not out.exists()


@one_node
@pytest.mark.parametrize("chunk", [None, 2])
def test_array_of_four_covers_the_list_once_and_merges(images, tmp_path, chunk):
    script = tmp_path / "array.sh"
    extra = ["--array-chunk", str(chunk)] if chunk else []
    script.write_text("#!/bin/bash\n" + shlex.join([str(BIN), "run", str(images / "in"), "-o", str(tmp_path / "out"),
                      "--progress", "none", "--report", "nismooth-%A_%a.json", *extra]) + "\n")
    # Two at a time (%2), 1 GiB per CPU: far more than the run needs.
    jid = submit(script, tmp_path, "--array=0-3%2", "-o", "%x-%A_%a.out", "--mem-per-cpu=1024M")
    reports = sorted(tmp_path.glob(f"nismooth-{jid}_*.json"))
    assert len(reports) == 4
    seen = []
    for p in reports:
        r = json.loads(p.read_text())
        assert r["array"]["count"] == 4
        assert r["slurm"]["array_job_id"] == int(jid)
        seen += [i["index"] for i in r["images"]]
    assert sorted(seen) == list(range(6)), "each image in exactly one task"
    proc = subprocess.run([str(BIN), "report", "merge", *map(str, reports), "-o", str(tmp_path / "merged.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "merged.json").read_text())
    assert [i["index"] for i in m["images"]] == list(range(6))
    assert m["summary"]["ok"] == 6 and len(m["processes"]) == 4
    assert m["slurm"]["job_id"] == int(jid) and m["slurm"]["array_task_id"] is None, "the array's id, no task's"
    outputs_match(tmp_path / "out", images / "single")
    recs = jobcomp(jid)
    assert len(recs) == 4 and all(rec["JobState"] == "COMPLETED" for rec in recs), recs
    # `report --job` on the array: one total whose span is the first start to the last end (the %2
    # throttle ran the tasks in two waves), a line per task, memory advice in the script's unit.
    starts_ends = wait_for_accounting(jid, 4)
    span = max(e for _, e in starts_ends) - min(s for s, _ in starts_ends)
    shown = client(BIN, "report", "--job", jid).stdout
    assert f"== array {jid} (array.sh): 4 task(s), 4 completed, 0 not" in shown, shown
    assert f"span {span // 3600}:{span // 60 % 60:02}:{span % 60:02} (first start to last end)" in shown, shown
    assert sum(line.strip().startswith(f"{jid}_") for line in shown.splitlines()) == 4, shown
    assert "advice (every task): memory: --mem-per-cpu=256M would do (the peak + 25%), not --mem-per-cpu=1024M" \
        in shown, shown


def sacct(jid):
    """Slurm's own accounting (slurmdbd): one dict per job and step, keyed by sacct's field names.
    slurmctld sends a finished job to slurmdbd a moment after squeue forgets it: poll until the
    record is whole (a final state, its limit, its batch step)."""
    fields = "JobID,State,ExitCode,Elapsed,Timelimit,TotalCPU,MaxRSS,ReqMem,AllocCPUS"
    for _ in range(100):
        out = client("sacct", "-j", jid, "-P", "-n", "-o", fields).stdout
        recs = [dict(zip(fields.split(","), line.split("|"))) for line in out.splitlines() if line]
        if len(recs) >= 2 and recs[0]["Timelimit"] and recs[0]["State"] not in ("PENDING", "RUNNING"):
            return recs
        time.sleep(0.1)
    raise AssertionError(f"sacct has no whole record of job {jid}: {out}")


def wait_for_accounting(jid, tasks):
    """Each array task's (start, end), in seconds, once sacct has them all."""
    for _ in range(100):
        out = client("sacct", "-j", jid, "-X", "-P", "-n", "-o", "JobID,Start,End").stdout
        rows = [line.split("|") for line in out.splitlines() if line]
        if len(rows) == tasks and all(r[2] not in ("Unknown", "") for r in rows):
            stamp = lambda t: int(time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")))
            return [(stamp(r[1]), stamp(r[2])) for r in rows]
        time.sleep(0.1)
    raise AssertionError(f"sacct has no whole record of array {jid}: {out}")


def seconds(t):
    """Slurm's [D-]HH:MM:SS (or MM:SS.mmm) as seconds."""
    days, _, rest = t.rpartition("-")
    parts = [float(x) for x in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def kib(rss):
    """sacct's MaxRSS (e.g. 104412K) as KiB."""
    scale = {"K": 1, "M": 1024, "G": 1024 ** 2}
    return float(rss[:-1]) * scale[rss[-1]] if rss and rss[-1] in scale else float(rss or 0) / 1024


@one_node
def test_estimated_requests_hold_and_the_cluster_enforces_them(tmp_path):
    # 18 images of 32 MiB in float32 (six generated, each copied twice: the job must outlast a few of
    # jobacct_gather's one-second samples, or sacct's MaxRSS stays 0); a study on this host, an
    # estimate for the 18, its script as written.
    data = tmp_path / "big"
    subprocess.run([str(BIN), "generate", "-o", str(data), "-n", "6", "--shape", "256,256,128", "--dtype", "float32"],
                   check=True, capture_output=True)
    for k, p in enumerate(sorted(data.iterdir()) * 2):
        shutil.copyfile(p, data / f"sub-{k + 6:04d}_T1w.nii.gz")
    subprocess.run([str(BIN), "study", "--ranks", "1", "--threads", "1", "--tasks", "2,4", "--reps", "1", "--data",
                    str(data), "-o", str(tmp_path / "study")], check=True, capture_output=True, env=ENV)
    script = tmp_path / "job.sh"
    subprocess.run([str(BIN), "estimate", "--from", str(tmp_path / "study" / "study.json"), "--tasks", "18", "--ranks",
                    "1", "--sbatch", str(script), "--", str(data), "-o", str(tmp_path / "out")],
                   check=True, capture_output=True, env=ENV)
    text = script.read_text()
    jid = submit(script, tmp_path)
    job, batch = sacct(jid)[:2]
    assert job["State"] == "COMPLETED", sacct(jid)
    assert seconds(job["Elapsed"]) <= seconds(job["Timelimit"]), job
    assert f"--time={job['Timelimit']}" in text or job["Timelimit"].endswith(text.split("--time=")[1].split()[0])
    assert outputs(tmp_path / "out") == sorted(p.name for p in data.iterdir())
    # nismooth's own peak against Slurm's MaxRSS of the batch step (the cgroup's high-water mark).
    report = json.loads((tmp_path / f"nismooth-{jid}.json").read_text())
    ours = report["summary"]["peak_rss_bytes"] / 1024
    theirs = kib(batch["MaxRSS"])
    print(f"peak RSS: nismooth {ours / 1024:.1f} MiB, sacct MaxRSS {theirs / 1024:.1f} MiB "
          f"(request {job['ReqMem']}), elapsed {job['Elapsed']} of {job['Timelimit']}")
    assert 0.75 <= theirs / ours <= 1.25, (ours, batch)
    # `report --job`: sacct's verdicts beside nismooth's own, as seff prints them.
    shown = client(BIN, "report", "--job", jid).stdout
    cpu = float(shown.split("CPU efficiency ")[1].split("%")[0])
    mem = float(shown.split("memory efficiency ")[1].split("%")[0])
    assert 0 < cpu <= 100 and f"{theirs / 1024:.1f} MiB of" in shown and f"own peak {ours / 1024:.1f} MiB" in shown
    request_mib = kib(job["ReqMem"]) / 1024
    assert abs(mem - 100 * theirs / 1024 / request_mib) < 0.1, shown
    assert "time efficiency" in shown and "slowest images: sub-" in shown, shown

    # The same job asking for a third of that peak: the cgroup kills it, and sacct says so.
    third = max(1, int(ours / 1024 / 3))
    small = tmp_path / "small.sh"
    small.write_text(text.replace(str(tmp_path / "out"), str(tmp_path / "out-small"))
                     .replace(text.split("#SBATCH --mem=")[1].split()[0], f"{third}M", 1))
    assert f"#SBATCH --mem={third}M" in small.read_text()
    jid = submit(small, tmp_path)
    assert sacct(jid)[0]["State"] == "OUT_OF_MEMORY", sacct(jid)
    shown = client(BIN, "report", "--job", jid).stdout
    assert "OUT_OF_MEMORY" in shown and f"advice: killed for memory with --mem={third}M: ask for --mem=" in shown, shown
    # The number it gives runs.
    asked = shown.split(": ask for --mem=")[1].split("M")[0]
    again = tmp_path / "again.sh"
    again.write_text(small.read_text().replace(f"#SBATCH --mem={third}M", f"#SBATCH --mem={asked}M")
                     .replace(str(tmp_path / "out-small"), str(tmp_path / "out-again")))
    jid = submit(again, tmp_path)
    assert sacct(jid)[0]["State"] == "COMPLETED", (shown, sacct(jid))
    print(f"after OUT_OF_MEMORY at --mem={third}M, report --job asked --mem={asked}M, which ran")


@one_node
def test_an_estimated_array_runs_as_estimated(images, tmp_path):
    # `estimate --model array`: 6 images in 4 tasks, 2 at once; the script it writes asks per
    # task for the estimate's time and memory, and the array runs in the waves it predicted.
    study = tmp_path / "study"
    subprocess.run([str(BIN), "study", "--ranks", "1", "--threads", "1", "--tasks", "2,4", "--reps", "1", "--data",
                    str(images / "in"), "-o", str(study)], check=True, capture_output=True, env=ENV)
    script = tmp_path / "array.sh"
    shown = subprocess.run([str(BIN), "estimate", "--from", str(study / "study.json"), "--tasks", "6", "--model",
                            "array", "--array-tasks", "4", "--array-limit", "2", "--sbatch", str(script), "--",
                            str(images / "in"), "-o", str(tmp_path / "out")],
                           check=True, capture_output=True, text=True, env=ENV).stdout
    assert "job array of 4 tasks (up to 2 images each, cyclic shares), 2 at once" in shown, shown
    assert "2 wave(s) of 2 task(s)" in shown, shown
    text = script.read_text()
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --mem=" in text and " --array" in text, text
    jid = submit(script, tmp_path)
    recs = jobcomp(jid)
    assert len(recs) == 4 and all(rec["JobState"] == "COMPLETED" for rec in recs), recs
    limit = text.split("#SBATCH --time=")[1].split()[0]
    for rec in [r for r in sacct(jid) if "." not in r["JobID"]]:
        assert seconds(rec["Elapsed"]) <= seconds(rec["Timelimit"]) and rec["Timelimit"].endswith(limit), rec
    outputs_match(tmp_path / "out", images / "single")
    starts_ends = wait_for_accounting(jid, 4)
    span = max(e for _, e in starts_ends) - min(s for s, _ in starts_ends)
    predicted = shown.split("the array      ")[1].split(" (")[0]
    print(f"estimated array: predicted span {predicted} (queue waits and Slurm's task start not included), "
          f"measured {span} s")


@one_node
def test_an_array_whose_chunks_leave_images_out_fails_every_task(images, tmp_path):
    # Four tasks of one image each on six images: before, every task warned, ended 0 and
    # the array showed COMPLETED with two images never smoothed.
    script = tmp_path / "array.sh"
    script.write_text("#!/bin/bash\n" + shlex.join([str(BIN), "run", str(images / "in"), "-o", str(tmp_path / "out"),
                      "--progress", "none", "--array", "--array-chunk", "1"]) + "\n")
    jid = submit(script, tmp_path, "--array=0-3", "-o", "%x-%A_%a.out")
    recs = jobcomp(jid)
    assert len(recs) == 4 and all(r["JobState"] == "FAILED" and r["ExitCode"].startswith("2:") for r in recs), recs
    assert not (tmp_path / "out").exists()
    logs = "".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert "leaves the last 2 of 6 images to no task: submit --array=0-5" in logs


@one_node
@pytest.mark.parametrize("model", ["serial", "threads", "mpi", "array", "hybrid"])
def test_generated_scripts_run_as_is(images, tmp_path, model):
    script = tmp_path / "job.sh"
    opts = {"mpi": ["--ntasks-per-node", "2"], "hybrid": ["--ntasks-per-node", "2", "--cpus-per-task", "1"],
            "threads": ["--cpus-per-task", "2"], "array": ["--array-tasks", "3"]}.get(model, [])
    subprocess.run([str(BIN), "sbatch", "--model", model, "--partition", "debug", "--time", "00:05:00", *opts,
                    "--setup", "echo setup-ran-$SLURM_JOB_ID", "--write", str(script), "--", str(images / "in"),
                    "-o", str(tmp_path / "out")], check=True, capture_output=True)
    jid = submit(script, tmp_path)
    recs = jobcomp(jid)
    assert recs and all(r["JobState"] == "COMPLETED" for r in recs), recs
    outputs_match(tmp_path / "out", images / "single")
    logs = "".join(p.read_text() for p in tmp_path.glob("nismooth-*.out"))
    # The models without srun are timed with GNU time; srun's own time would measure srun, not its ranks.
    assert ("time: wall" in logs) == (model in ("serial", "threads", "array")), logs
    assert "setup-ran-" in logs, "--setup lines run before the job"
    reports = list(tmp_path.glob("nismooth-*.json"))
    assert len(reports) == (3 if model == "array" else 1)


@one_node
def test_corrupt_image_fails_the_job_and_the_rest_is_written(images, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(images / "in", src)
    bad = sorted(src.iterdir())[2]
    bad.write_bytes(b"not a nifti file at all")
    script = tmp_path / "job.sh"
    subprocess.run([str(BIN), "sbatch", "--model", "mpi", "--ntasks-per-node", "2", "--write", str(script), "--",
                    str(src), "-o", str(tmp_path / "out")], check=True, capture_output=True)
    jid = submit(script, tmp_path)
    (rec,) = jobcomp(jid)
    assert rec["JobState"] == "FAILED" and rec["ExitCode"].startswith("1:"), rec
    written = outputs(tmp_path / "out")
    assert written == sorted(p.name for p in src.iterdir() if p != bad)
    log = (tmp_path / f"nismooth-{jid}.out").read_text()
    assert bad.name in log and "FAILED" in log


@two_nodes
def test_srun_across_two_nodes(images, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    client("srun", "-N", "2", "-n", "2", "--mpi=pmix", BIN, "run", images / "in", "-o", out, "--threads", "1",
           "--progress", "none", "--report", report)
    r = json.loads(report.read_text())
    nodes = {p["slurm"]["nodename"] for p in r["processes"]}
    hosts = {p["host"] for p in r["processes"]}
    assert nodes == {"node1", "node2"} and hosts == {"node1", "node2"}, r["processes"]
    assert all(p["node_rank"] == 0 for p in r["processes"]), "one rank per node"
    outputs_match(out, images / "single")


@two_nodes
def test_sbatch_two_nodes_with_mpirun_inside(images, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n#SBATCH -N 2\n#SBATCH --ntasks-per-node=1\n#SBATCH -o %x-%j.out\n"
        "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n"
        + shlex.join(["mpirun", str(BIN), "run", str(images / "in"), "-o", str(tmp_path / "out"), "--threads", "1",
                      "--progress", "none", "--report", "r-%j.json"]) + "\n")
    jid = submit(script, tmp_path)
    (rec,) = jobcomp(jid)
    assert rec["JobState"] == "COMPLETED", rec
    r = json.loads((tmp_path / f"r-{jid}.json").read_text())
    assert {p["host"] for p in r["processes"]} == {"node1", "node2"}
    assert r["slurm"]["job_id"] == int(jid)
    outputs_match(tmp_path / "out", images / "single")


@one_node
def test_study_through_srun(tmp_path):
    """`nismooth study --launcher srun`: each point is a real Slurm job step."""
    out = tmp_path / "study"
    proc = subprocess.run([str(BIN), "study", "--launcher", "srun", "--ranks", "1,2", "--threads", "1",
                           "--tasks", "2,4", "--reps", "1", "--shape", "20,18,12", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr
    study = json.loads((out / "study.json").read_text())
    assert {(p["ranks"], p["tasks"]) for p in study["points"]} == {(1, 2), (1, 4), (2, 2), (2, 4)}
    for p in study["points"]:
        r = json.loads(open(p["report"]).read())
        assert len(r["processes"]) == p["ranks"]
        assert all(q["slurm"] and q["slurm"]["job_id"] for q in r["processes"]), "ran as a Slurm step"
        if p["ranks"] == 2:
            assert r["parallel"]["comm"].startswith("MPI, 2 rank")


def temps(d):
    """Temp files (ours are dot-names ending .tmp) in an output directory."""
    return [p.name for p in Path(d).iterdir() if p.name.endswith(".tmp")] if Path(d).exists() else []


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """48 images of 256×256×128 int16 (12 generated, each copied 3 times) and the 12 originals'
    outputs from one uninterrupted run: a copy's output must equal its original's."""
    d = tmp_path_factory.mktemp("big")
    data, single = d / "in", d / "single"
    subprocess.run([str(BIN), "generate", "-o", str(data), "-n", "12", "--shape", "256,256,128", "--seed", "5"],
                   check=True, capture_output=True)
    t = time.monotonic()
    subprocess.run([str(BIN), "run", str(data), "-o", str(single), "--progress", "none", "--no-sync", "--threads", "1"],
                   check=True, capture_output=True)
    # One image's time at one thread here: the requeue test sizes its attempts by it.
    (d / "per_image_s").write_text(str((time.monotonic() - t) / 12))
    for k in range(12, 48):
        shutil.copyfile(data / f"sub-{k % 12:04d}_T1w.nii.gz", data / f"sub-{k:04d}_T1w.nii.gz")
    return d


def whole_and_identical(out, big):
    """Every image written once, byte-identical to the uninterrupted run, and no temp file."""
    assert temps(out) == []
    for k in range(48):
        name = f"sub-{k:04d}_T1w.nii.gz"
        assert (out / name).read_bytes() == (big / "single" / f"sub-{k % 12:04d}_T1w.nii.gz").read_bytes(), name
    assert sorted(p.name for p in out.iterdir() if p.name != ".nismooth") == sorted(p.name for p in (big / "in").iterdir())


def attempts(log):
    """Each attempt's exit code, from the script's own lines."""
    ends = [line for line in log.splitlines() if line.startswith("attempt ") and " ended " in line]
    return [int(line.rsplit(" ", 1)[1]) for line in ends]


@one_node
def test_a_job_out_of_time_drains_requeues_and_completes(big, tmp_path):
    # 48 images, two MPI ranks under srun; a one-minute limit whose deadline (the job's end from
    # squeue, less 57 s) leaves each attempt about 3 s, and in the second attempt Slurm's USR1 to the
    # script (as --signal=B:USR1 sends it) drains the run early. Each attempt exits 3 and requeues
    # the job, the next resumes.
    data = big / "in"
    script, out = tmp_path / "job.sh", tmp_path / "out"
    subprocess.run([str(BIN), "sbatch", "--model", "mpi", "--ntasks-per-node", "2", "--time", "1", "--requeue",
                    "--requeue-lead", "20", "--max-requeues", "8", "--write", str(script), "--", str(data), "-o",
                    str(out), "--deadline-margin", "57s", "--no-sync"], check=True, capture_output=True)
    text = script.read_text()
    assert "#SBATCH --requeue" in text and "#SBATCH --signal=B:USR1@20" in text and "scontrol requeue" in text
    jid = client("sbatch", "--parsable", f"--chdir={tmp_path}", script).stdout.strip()
    start, signalled, states = time.time(), False, []
    while time.time() - start < 240:
        fields = client("squeue", "-h", "-j", jid, "-o", "%T|%S", check=False).stdout.strip()
        if not fields:
            break
        state = fields.split("|")[0]
        restarts = int(client("scontrol", "show", "job", jid).stdout.split("Restarts=")[1].split()[0])
        states.append((state, restarts))
        if state == "PENDING" and restarts > 0:
            assert temps(out) == [], "a drained attempt leaves no temp file"
        if state == "RUNNING" and restarts == 1 and not signalled:
            time.sleep(1.0)
            client("scancel", "--batch", "--signal=USR1", jid, check=False)
            signalled = True
        time.sleep(0.2)
    else:
        raise AssertionError(f"job {jid} still queued or running after 240 s: {states[-5:]}")
    log = (tmp_path / f"nismooth-{jid}.out").read_text()
    codes = attempts(log)
    assert len(codes) >= 3 and codes[-1] == 0 and set(codes[:-1]) == {3}, log
    assert "USR1: draining the run" in log, log
    reports = [json.loads((tmp_path / f"nismooth-{jid}.{k}.json").read_text()) for k in range(len(codes))]
    reasons = [r["stopped"]["reason"] if r.get("stopped") else None for r in reports]
    assert "SIGUSR1" in reasons and "deadline" in reasons, reasons
    for r in reports:
        assert len(r["images"]) == 48, "every image of the run in every attempt's report"
    merged = tmp_path / "merged.json"
    client(BIN, "report", "merge", *[tmp_path / f"nismooth-{jid}.{k}.json" for k in range(len(codes))], "-o", merged)
    m = json.loads(merged.read_text())
    assert [i["status"] for i in m["images"]] == ["ok"] * 48, "the merged report has each image done once"
    done = [sum(i["status"] == "ok" for i in r["images"]) for r in reports]
    assert sum(done) == 48, done
    # `report --job`: every attempt, and their sum.
    shown = client(BIN, "report", "--job", jid).stdout
    assert f"== job {jid} " in shown and f"after {len(codes) - 1} requeue(s)" in shown, shown
    assert all(f"  attempt {k + 1}: " in shown for k in range(len(codes))), shown
    assert f"  all {len(codes)} attempts: " in shown and ", 48 image(s) smoothed" in shown, shown
    assert "the run's exit 3: it stopped early and its script requeued it" in shown, shown
    print(shown)
    print(f"attempts {len(codes)}: images done per attempt {done}, stopped by {reasons}; "
          f"walls {[round(r['summary']['wall_s'], 2) for r in reports]} s")
    whole_and_identical(out, big)


@one_node
def test_an_array_task_out_of_time_requeues_itself(big, tmp_path):
    # Two array tasks of 24 images each, one minute, the deadline a few seconds after the start: each
    # task stops early, requeues itself alone, and resumes its own share. The window is at least 2 s:
    # the job's end is known to the second, so a 1 s window left some attempts 0.5 s and two images
    # (13 attempts on a Zen 5, over the requeue limit); on a slower machine it grows with the pace.
    script, out = tmp_path / "job.sh", tmp_path / "out"
    per_image = float((big / "per_image_s").read_text())
    window = min(5, max(2, round(15 * per_image)))
    subprocess.run([str(BIN), "sbatch", "--model", "array", "--array-tasks", "2", "--cpus-per-task", "1", "--time",
                    "1", "--requeue", "--requeue-lead", "20", "--max-requeues", "30", "--write", str(script), "--",
                    str(big / "in"), "-o", str(out), "--deadline-margin", f"{60 - window}s", "--no-sync",
                    "--threads", "1"],
                   check=True, capture_output=True)
    jid = client("sbatch", "--parsable", f"--chdir={tmp_path}", script).stdout.strip()
    start = time.time()
    while client("squeue", "-h", "-j", jid, check=False).stdout.strip():
        assert time.time() - start < 420, f"array {jid} still queued or running after 420 s"
        time.sleep(0.3)
    reports = []
    for task in (0, 1):
        log = (tmp_path / f"nismooth-{jid}_{task}.out").read_text()
        codes = attempts(log)
        assert len(codes) >= 2 and codes[-1] == 0 and set(codes[:-1]) == {3}, log
        # Before each requeue the run says that the script requeues it, not "run again".
        assert log.count("this job script now requeues the job") == len(codes) - 1, log
        assert "run again with --resume" not in log, log
        reports += [tmp_path / f"nismooth-{jid}_{task}.{k}.json" for k in range(len(codes))]
        print(f"array task {task}: {len(codes)} attempts")
    merged = tmp_path / "merged.json"
    client(BIN, "report", "merge", *reports, "-o", merged)
    m = json.loads(merged.read_text())
    assert [i["status"] for i in m["images"]] == ["ok"] * 48
    whole_and_identical(out, big)
    shown = client(BIN, "report", "--job", jid).stdout
    requeues = len(reports) - 2
    assert f"2 task(s), 2 completed, 0 not, {requeues} requeue(s)" in shown, shown
    print(shown)


@pytest.fixture(scope="module")
def bids_raw(tmp_path_factory):
    """A BIDS dataset (3 participants) and the derivatives one process makes of it."""
    d = tmp_path_factory.mktemp("bids")
    subprocess.run(["python3", str(ROOT / "scripts" / "make_bids_sample.py"), str(d / "raw")], check=True)
    subprocess.run([str(BIN), "bids", str(d / "raw"), str(d / "single"), "participant", "--fwhm", "6"],
                   check=True, capture_output=True)
    return d


@one_node
@pytest.mark.parametrize("model", ["array", "mpi"])
def test_bids_job_scripts_run_as_is(bids_raw, tmp_path, model):
    """sbatch's bids form: an array of one task per participant, or MPI ranks;
    the derivatives dataset is the single process's, byte for byte."""
    script = tmp_path / "job.sh"
    opts = ["--ntasks-per-node", "2"] if model == "mpi" else []
    proc = subprocess.run([str(BIN), "sbatch", "--model", model, "--partition", "debug", "--time", "00:05:00",
                           *opts, "--write", str(script), "--", "bids", str(bids_raw / "raw"),
                           str(tmp_path / "out"), "participant", "--fwhm", "6"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    if model == "array":
        assert "#SBATCH --array=0-2" in script.read_text()
    jid = submit(script, tmp_path)
    recs = jobcomp(jid)
    assert recs and all(r["JobState"] == "COMPLETED" for r in recs), recs
    assert len(recs) == (3 if model == "array" else 1)
    single = bids_raw / "single"
    made = sorted(str(p.relative_to(single)) for p in single.rglob("sub-*/*/*") if p.is_file())
    made += sorted(str(p.relative_to(single)) for p in single.rglob("sub-*/ses-*/*/*") if p.is_file())
    assert len(made) == 18
    for rel in made:
        assert (tmp_path / "out" / rel).read_bytes() == (single / rel).read_bytes(), rel
