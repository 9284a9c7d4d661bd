#!/usr/bin/env python3
"""Two nismooth binaries, the same behaviour? For a change meant to move code
only: outputs byte for byte, reports (times, hosts, pids and paths left
out), job scripts and every --help, on a small example set. Prints one line
per case and exits 1 when anything differs.

    scripts/same_behaviour.py BEFORE_BINARY AFTER_BINARY
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

before, after = sys.argv[1:3]
work = Path(tempfile.mkdtemp())
subprocess.run([after, "generate", "-o", work / "in", "-n", "3", "--shape", "24,20,16", "-q"], check=True)
subprocess.run([after, "generate", "-o", work / "in4", "-n", "1", "--shape", "12,10,8,3", "--dtype", "float32",
                "-q"], check=True)
(work / "tree" / "a" / "b").mkdir(parents=True)
for i, p in enumerate(sorted((work / "in").glob("*.nii.gz"))):
    (work / "tree" / ("a" if i % 2 else "a/b") / p.name).write_bytes(p.read_bytes())

RUNS = {
    "default": ["run", work / "in"],
    "constant": ["run", work / "in", "--mode", "constant", "--cval", "3", "--dtype", "float32"],
    "nilearn": ["run", work / "in", "--fwhm", "6", "--compat", "nilearn"],
    "fsl": ["run", work / "in", "--compat", "fsl", "--sigma", "2"],
    "4-D, .nii": ["run", work / "in4", "--sigma", "1.5,0,2", "--format", "nii"],
    "tree": ["run", "-r", work / "tree"],
}
# What differs between two runs of one binary: times, the machine, the process.
VOLATILE = {"created_unix", "command", "wall_s", "cpu_s", "read_s", "filter_s", "write_s", "busy_s", "idle_s",
            "started_s", "finished_s", "peak_rss_bytes", "cpu_efficiency", "host", "pid", "load_imbalance",
            "parallel_efficiency", "read_per_task_s", "filter_per_task_s", "write_per_task_s", "wtime_over_ptime",
            "images_per_s", "mb_per_s", "input", "output", "outdir", "nismooth_version", "threads_from",
            "cpu_user_s", "cpu_sys_s"}


def steady(value):
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def run(binary, name, args):
    out = work / f"{name}-{'b' if binary == before else 'a'}".replace(" ", "_").replace(",", "")
    subprocess.run([binary, *map(str, args), "-o", out, "--progress", "none", "--threads", "1",
                    "--report", f"{out}.json"], check=True, capture_output=True)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and ".nismooth" not in p.parts}
    return files, steady(json.loads(Path(f"{out}.json").read_text()))


def text(binary, *args):
    """What `binary ARGS` prints, its own path named BINARY (job scripts name the binary they run)."""
    out = subprocess.run([binary, *map(str, args)], capture_output=True, text=True).stdout
    return out.replace(str(Path(binary).resolve()), "BINARY")


differ = 0
for name, args in RUNS.items():
    (fb, rb), (fa, ra) = run(before, name, args), run(after, name, args)
    same = fb == fa and rb == ra
    differ += not same
    print(f"{'same' if same else 'DIFFERS'}  run {name}: {len(fa)} output(s), report "
          f"{'equal' if rb == ra else 'differs'}")
for model in ["serial", "threads", "mpi", "array", "hybrid"]:
    args = ["sbatch", "--model", model, "--", work / "in", "-o", work / "sb"]
    same = text(before, *args) == text(after, *args)
    differ += not same
    print(f"{'same' if same else 'DIFFERS'}  sbatch --model {model}")
for sub in ["", "run", "bids", "sbatch", "report", "study", "estimate", "generate", "completions", "weights",
            "bench-filter"]:
    args = [sub, "--help"] if sub else ["--help"]
    same = text(before, *args) == text(after, *args)
    differ += not same
    print(f"{'same' if same else 'DIFFERS'}  {' '.join(args)}")
print(f"{differ} case(s) differ")
sys.exit(1 if differ else 0)
