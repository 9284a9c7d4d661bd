#!/usr/bin/env python3
"""Do estimates survive a noisy machine? Two studies with default settings,
back to back, each asked for 40 000 images on 4 nodes × 16 ranks and for
the 40-image job on the test cluster, which then runs three times,
interleaved with the studies.

    source /tmp/nismooth-slurm/env.sh      # the test cluster (ci/slurm/start.sh)
    python3 scripts/noise_check.py [--bin target/release/nismooth] [--work DIR]

Prints the figures as a Markdown table (docs/performance.md keeps one run's);
exits 1 when the two 40 000-image intervals do not overlap, or when a
measured job falls outside an interval.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def nis(binary, *args):
    return subprocess.run([str(binary), *map(str, args)], check=True, capture_output=True, text=True)


def sacct_seconds(jid):
    """The job's Elapsed, once slurmdbd has it."""
    for _ in range(200):
        out = subprocess.run(["sacct", "-j", jid, "-X", "-n", "-P", "-o", "State,ElapsedRaw"],
                             capture_output=True, text=True).stdout.split()
        if out and out[0].split("|")[0] not in ("PENDING", "RUNNING", "") and "|" in out[0]:
            state, secs = out[0].split("|")
            assert state == "COMPLETED", (jid, state)
            return float(secs)
        time.sleep(0.2)
    raise SystemExit(f"sacct has no record of job {jid}")


def submit(script, cwd):
    jid = subprocess.run(["sbatch", "--parsable", f"--chdir={cwd}", str(script)], check=True,
                         capture_output=True, text=True).stdout.strip()
    while subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True).stdout.strip():
        time.sleep(0.3)
    report = json.loads((Path(cwd) / f"nismooth-{jid}.json").read_text())
    return jid, sacct_seconds(jid), report["summary"]["wall_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "nismooth"))
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    binary = Path(a.bin).resolve()
    work = Path(a.work or tempfile.mkdtemp(prefix="nismooth-noise-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data40"
    nis(binary, "generate", "-q", "-o", data, "-n", "40", "--shape", "256,256,128", "--dtype", "float32")
    jobs, estimates = [], {}

    def study(name):
        t = time.time()
        nis(binary, "study", "-q", "-o", work / name)
        nis(binary, "estimate", "--from", work / name / "study.json", "--tasks", "40000", "--nodes", "4",
            "--ntasks-per-node", "16", "--json", work / f"{name}-40000.json")
        nis(binary, "estimate", "--from", work / name / "study.json", "--tasks", "40", "--ranks", "2",
            "--json", work / f"{name}-40.json", "--sbatch", work / f"{name}-40.sh", "--", data,
            "-o", work / f"out-{name}")
        estimates[name] = {n: json.loads((work / f"{name}-{n}.json").read_text())["estimate"]["wall_s"]
                           for n in ("40000", "40")}
        print(f"study {name}: {time.time() - t:.0f} s", flush=True)

    def job(k):
        out = work / "out-A"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        jid, elapsed, wall = submit(work / "A-40.sh", work)
        jobs.append((jid, elapsed, wall))
        print(f"job {k} ({jid}): elapsed {elapsed:.0f} s, nismooth's wall {wall:.2f} s", flush=True)

    study("A")
    job(1)
    study("B")
    job(2)
    job(3)

    cpu = nis(binary, "--version").stdout.splitlines()
    print(f"\n{cpu[0]}; {cpu[1]}")
    print("| study | 40 000 images on 4 × 16 ranks | 40 images on the test cluster (1 node × 2 ranks) |")
    print("|---|---|---|")
    hms = lambda s: time.strftime("%H:%M:%S", time.gmtime(s))
    for name, e in estimates.items():
        big, small = e["40000"], e["40"]
        print(f"| {name} | {hms(big['value'])} ({hms(big['low'])} to {hms(big['high'])}) | "
              f"{small['value']:.1f} s ({small['low']:.1f} to {small['high']:.1f} s) |")
    print("\nMeasured (sacct Elapsed, whole seconds; nismooth's own wall): " +
          ", ".join(f"{e:.0f} s ({w:.2f} s)" for _, e, w in jobs))
    a, b = estimates["A"]["40000"], estimates["B"]["40000"]
    overlap = a["low"] <= b["high"] and b["low"] <= a["high"]
    inside = all(e["40"]["low"] - 1 <= el <= e["40"]["high"] + 1 for e in estimates.values() for _, el, _ in jobs)
    print(f"40 000-image intervals overlap: {overlap}; every measured job inside both 40-image intervals "
          f"(±1 s, sacct's resolution): {inside}")
    raise SystemExit(0 if overlap and inside else 1)


if __name__ == "__main__":
    main()
