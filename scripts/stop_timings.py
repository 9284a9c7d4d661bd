#!/usr/bin/env python3
"""How fast does a run stop, and how close does a deadline get? The figures in docs/slurm.md.

    python3 scripts/stop_timings.py [--bin target/release/nismooth] [--reps 5]

On 24 images of 256×256×128 int16 (12 generated, each copied once), at one thread per rank:
- the time from SIGTERM to exit, mid-run: with the images in flight finished (the default grace),
  and abandoned (--grace 0), for one process and for `mpirun -n 2` (the signal to every rank);
- with --deadline a third of an uninterrupted run: the time left unused at the end, against one image's time.
Medians over --reps runs, each side by side with the others.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
N = 24


def data(binary, d):
    subprocess.run([binary, "generate", "-o", d / "in", "-n", "12", "--shape", "256,256,128", "--seed", "9"],
                   check=True, capture_output=True)
    originals = sorted((d / "in").iterdir())
    for k in range(12, N):
        shutil.copyfile(originals[k % 12], d / "in" / f"sub-{k:04d}_T1w.nii.gz")


def args(binary, d, out, *extra):
    return [binary, "run", d / "in", "-o", out, "--threads", "1", "--progress", "none", "--no-sync", *extra]


def outputs(out):
    return sum(p.name.endswith(".nii.gz") and not p.name.startswith(".") for p in out.iterdir()) if out.exists() else 0


def stop_time(binary, d, ranks, grace):
    """Seconds from SIGTERM (to every rank) to the launcher's exit, mid-run."""
    out = d / f"out-{ranks}-{grace}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = args(binary, d, out, "--grace", grace)
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    while outputs(out) < 6:
        time.sleep(0.005)
    pids = subprocess.run(["pgrep", "-f", f"^{binary} run .* -o {out} "], capture_output=True, text=True).stdout
    t = time.monotonic()
    for pid in pids.split():
        os.kill(int(pid), signal.SIGTERM)
    rc = p.wait(timeout=120)
    assert rc == 3, rc
    return time.monotonic() - t


def deadline(binary, d, whole):
    out, report = d / "out-deadline", d / "deadline.json"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(args(binary, d, out, "--deadline", f"{whole / 3:.2f}s", "--report", report), capture_output=True)
    r = json.loads(report.read_text())
    return r["stopped"]["unused_s"], sum(i["status"] == "ok" for i in r["images"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/release/nismooth")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    binary = str(Path(a.bin).resolve())
    d = Path(tempfile.mkdtemp(prefix="nismooth-stop-"))
    data(binary, d)
    rows = {k: [] for k in ["1 rank, grace 10 s", "1 rank, grace 0", "2 ranks, grace 10 s", "2 ranks, grace 0"]}
    wholes, unused, done = [], [], []
    for _ in range(a.reps):
        t = time.monotonic()
        shutil.rmtree(d / "whole", ignore_errors=True)
        subprocess.run(args(binary, d, d / "whole"), check=True, capture_output=True)
        wholes.append(time.monotonic() - t)
        for ranks in (1, 2):
            for grace in ("10", "0"):
                rows[f"{ranks} rank{'s' if ranks > 1 else ''}, grace {grace + ' s' if grace != '0' else '0'}"].append(
                    stop_time(binary, d, ranks, grace))
        u, n = deadline(binary, d, wholes[-1])
        unused.append(u)
        done.append(n)
    whole = statistics.median(wholes)
    print(f"uninterrupted run: {whole:.2f} s for {N} images ({whole / N * 1000:.0f} ms per image), median of {a.reps}")
    print("| SIGTERM mid-run | to exit, median (min–max) |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {statistics.median(v):.2f} s ({min(v):.2f}–{max(v):.2f}) |")
    print(f"--deadline {whole / 3:.2f} s: {statistics.median(done):.0f}/{N} images done, unused at the end "
          f"{statistics.median(unused):.2f} s median ({min(unused):.2f}–{max(unused):.2f}), one image "
          f"{whole / N:.2f} s")
    shutil.rmtree(d)


if __name__ == "__main__":
    main()
