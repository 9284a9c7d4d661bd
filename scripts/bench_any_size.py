#!/usr/bin/env python3
"""Images of any size, side by side: this build against a baseline build (one without parts and
slabs) on a long 4-D series and a large 3-D image, interleaved runs, best wall time and its peak RSS;
and one series at 2 threads against 1 (one image is one task, so only the filter's and the
compressor's threads can share it).

    scripts/bench_any_size.py --baseline OLD_NISMOOTH [--binary target/release/nismooth] [--reps 3]
                              [--out docs/any-size.md]
"""
import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np


def make(work):
    rng = np.random.default_rng(1)
    sets = {}
    series = work / "series"
    series.mkdir()
    nib.save(nib.Nifti1Image((rng.random((64, 64, 40, 600)) * 1000).astype(np.int16), np.eye(4)),
             series / "bold.nii.gz")
    sets["4-D int16 .nii.gz 64×64×40×600 (188 MiB)"] = series
    big = work / "big"
    big.mkdir()
    nib.save(nib.Nifti1Image((rng.random((512, 512, 256)) * 1000).astype(np.float32), np.eye(4)), big / "big.nii")
    sets["3-D float32 .nii 512×512×256 (256 MiB)"] = big
    gz = work / "bigz"
    gz.mkdir()
    nib.save(nib.Nifti1Image((rng.random((512, 512, 256)) * 1000).astype(np.float32), np.eye(4)),
             gz / "big.nii.gz")
    sets["3-D float32 .nii.gz 512×512×256 (256 MiB)"] = gz
    return sets


def one(binary, src, out, threads):
    report = out.with_suffix(".json")
    subprocess.run([binary, "run", src, "-o", out, "--threads", str(threads), "--no-sync", "--progress", "none",
                    "--report", report], check=True, capture_output=True)
    r = json.loads(report.read_text())["summary"]
    subprocess.run(["rm", "-rf", out, report], check=True)
    return r["wall_s"], r["peak_rss_bytes"] / (1 << 20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/nismooth")
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    version = subprocess.run([a.binary, "--version"], capture_output=True, text=True).stdout.splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [f"CPU: {cpu}; {version[1] if len(version) > 1 else ''}", "",
             f"Best of {a.reps} interleaved runs (wall from the report, `--no-sync`), peak RSS of that run.", "",
             "| image | threads | baseline wall | this wall | this / baseline | baseline peak | this peak |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, src in make(work).items():
            for threads in (1, 2):
                base, ours = [], []
                for k in range(a.reps):
                    base.append(one(a.baseline, src, work / f"b{k}", threads))
                    ours.append(one(a.binary, src, work / f"o{k}", threads))
                b, o = min(base), min(ours)
                lines.append(f"| {label} | {threads} | {b[0]:.3f} s | {o[0]:.3f} s | **{o[0] / b[0]:.3f}** "
                             f"| {b[1]:.0f} MiB | {o[1]:.0f} MiB |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
