"""MPI driver, side by side in one run: 1 rank vs 2 ranks, and the schedules' makespans.

1. Speed-up: a set of equal-size images, run by one process (--threads 1),
   by `mpirun -n 2` (1 thread per rank), and by one process with 2 threads.
2. Load balance: a --vary-size set at 2 ranks under block, cyclic, balanced and
   dynamic, in directory order and listed by size, largest first (as when one
   site's large scans come together). The makespan (the busiest rank's busy
   span, from its first read to its last write) is shown next to the ideal
   max(sum of busy spans / P, the longest image's span), both from that run.
Every configuration runs --reps times, interleaved; the median is reported.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", RUST_LOG="warn")


def run(binary, ranks, threads, inputs, outdir, schedule):
    shutil.rmtree(outdir, ignore_errors=True)
    report = outdir.with_suffix(".json")
    args = [binary, "run", *inputs, "-o", str(outdir), "--threads", str(threads), "--schedule", schedule,
            "--progress", "none", "--report", str(report)]
    if ranks > 1:
        args = ["mpirun", "-n", str(ranks), *args]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=ENV)
    outer = time.perf_counter() - t0
    return outer, json.loads(report.read_text())


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def image_time(i):
    """An image's own time in its rank's pipeline: its span, from read start
    to write end (stage sums over-count, since stages of neighbours overlap)."""
    return i["finished_s"] - i["started_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/nismooth")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--shape", default="256,256,128")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="also write the Markdown to this file")
    a = ap.parse_args()
    binary = str(Path(a.binary).resolve())
    work = Path(tempfile.mkdtemp(prefix="nismooth-mpi-bench-"))
    uniform, varied = work / "uniform", work / "varied"
    for d, extra in [(uniform, []), (varied, ["--vary-size"])]:
        subprocess.run([binary, "generate", "-o", str(d), "-n", str(a.n), "--shape", a.shape, "--seed", "42",
                        *extra], check=True, capture_output=True)

    speed = {"1 rank × 1 thread": (1, 1), "2 ranks × 1 thread (mpirun)": (2, 1), "1 rank × 2 threads": (1, 2)}
    by_size = sorted(varied.iterdir(), key=lambda p: -p.stat().st_size)
    (work / "largest-first.txt").write_text("".join(f"{p}\n" for p in by_size))
    orders = {"directory order": [str(varied)], "largest first": ["--list", str(work / "largest-first.txt")]}
    sched = [(o, s) for o in orders for s in ["block", "cyclic", "balanced", "dynamic"]]
    walls = {k: [] for k in speed}
    outer = {k: [] for k in speed}
    spans = {s: [] for s in sched}
    ideals = {s: [] for s in sched}
    imbalance = {s: [] for s in sched}
    for rep in range(a.reps):
        for name, (ranks, threads) in speed.items():
            o, r = run(binary, ranks, threads, [str(uniform)], work / "out-u", "balanced")
            walls[name].append(r["summary"]["wall_s"])
            outer[name].append(o)
        for s in sched:
            o, r = run(binary, 2, 1, orders[s[0]], work / f"out-{s[1]}", s[1])
            times = [image_time(i) for i in r["images"]]
            spans[s].append(max(p["busy_s"] for p in r["processes"]))
            busy = [p["busy_s"] for p in r["processes"]]
            ideals[s].append(max(sum(busy) / 2, max(times)))
            imbalance[s].append(r["summary"]["load_imbalance"])
        print(f"rep {rep + 1}/{a.reps} done", flush=True)

    med = statistics.median
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; "
        f"{a.n} generated float32 .nii.gz images of {a.shape} (±50% per axis for the varied set); "
        f"median of {a.reps} interleaved runs.",
        "",
        "| configuration | wall (report, s) | wall (outside, s) | speed-up vs 1 rank × 1 thread |",
        "|---|---|---|---|",
    ]
    base = med(walls["1 rank × 1 thread"])
    for name in speed:
        lines.append(f"| {name} | {med(walls[name]):.2f} | {med(outer[name]):.2f} | {base / med(walls[name]):.2f}× |")
    lines += [
        "",
        "Schedules on the varied set, 2 ranks × 1 thread. Makespan = the busiest rank's busy span;",
        "ideal = max(Σ busy / 2, the longest image's span) from the same run.",
        "",
        "| input order | schedule | makespan (s) | ideal (s) | makespan / ideal | load imbalance (max/mean busy) |",
        "|---|---|---|---|---|---|",
    ]
    for s in sched:
        lines.append(f"| {s[0]} | {s[1]} | {med(spans[s]):.2f} | {med(ideals[s]):.2f} | {med(spans[s]) / med(ideals[s]):.3f} "
                     f"| {med(imbalance[s]):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
