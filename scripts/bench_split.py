#!/usr/bin/env python3
"""One image over many ranks, side by side: a single large image smoothed by one process (1 and 2
threads), and by `mpirun -n 2` with one thread per rank, each image on one rank (`--split never`: the
other rank waits) against shared by both (`--split always`). Interleaved runs, best wall time (the
whole command, launch included, and the slowest rank's wall from the report), and the largest peak
RSS of a rank; every output is checked to be the single process's bytes.

    scripts/bench_split.py [--binary target/release/nismooth] [--reps 3] [--out docs/split.md]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


def make(work):
    rng = np.random.default_rng(1)
    sets = {}
    for name, shape, dtype, ext in (
        ("3-D float32 .nii 512×512×256 (256 MiB)", (512, 512, 256), np.float32, ".nii"),
        ("4-D int16 .nii 64×64×40×600 (188 MiB)", (64, 64, 40, 600), np.int16, ".nii"),
        ("3-D float32 .nii.gz 512×512×256 (256 MiB)", (512, 512, 256), np.float32, ".nii.gz"),
        ("4-D int16 .nii.gz 64×64×40×600 (188 MiB)", (64, 64, 40, 600), np.int16, ".nii.gz"),
    ):
        d = work / f"set{len(sets)}"
        d.mkdir()
        nib.save(nib.Nifti1Image((rng.random(shape) * 1000).astype(dtype), np.eye(4)), d / f"img{ext}")
        sets[name] = d
    return sets


WAYS = {
    "1 process, 1 thread": (None, ["--threads", "1"]),
    "1 process, 2 threads": (None, ["--threads", "2"]),
    "2 ranks × 1 thread, --split never": (2, ["--threads", "1", "--split", "never"]),
    "2 ranks × 1 thread, --split always": (2, ["--threads", "1", "--split", "always"]),
}


def one(binary, src, out, way):
    ranks, opts = WAYS[way]
    report = out.with_suffix(".json")
    cmd = [binary, "run", src, "-o", out, "--no-sync", "--progress", "none", "--report", report, *opts]
    if ranks:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", *cmd]
    t = time.monotonic()
    subprocess.run(list(map(str, cmd)), check=True, capture_output=True, env=ENV)
    total = time.monotonic() - t
    r = json.loads(report.read_text())
    wall = max(p["wall_s"] for p in r["processes"])
    peak = max(p["peak_rss_bytes"] for p in r["processes"]) / (1 << 20)
    (written,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return total, wall, peak, written.read_bytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/nismooth")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    version = subprocess.run([a.binary, "--version"], capture_output=True, text=True).stdout.splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores; {version[1] if len(version) > 1 else ''}", "",
             f"Best of {a.reps} interleaved runs, `--no-sync`. Command: the whole command, launch included; "
             "run: the slowest rank's wall from the report; peak: the largest rank's.", "",
             "| image | how | command | run | run / 1 thread | peak RSS |", "|---|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, src in make(work).items():
            best, want = {}, None
            for rep in range(a.reps):
                for way in WAYS:
                    out = work / "out"
                    total, wall, peak, data = one(a.binary, src, out, way)
                    shutil.rmtree(out)
                    want = want or data
                    assert data == want, f"{name}, {way}: not the single process's bytes"
                    b = best.get(way)
                    if b is None or wall < b[1]:
                        best[way] = (total, wall, peak)
            base = best["1 process, 1 thread"][1]
            for way, (total, wall, peak) in best.items():
                lines.append(f"| {name} | {way} | {total:.3f} s | {wall:.3f} s | {wall / base:.2f} | {peak:.0f} MiB |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
