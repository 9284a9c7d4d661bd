#!/usr/bin/env python3
"""nismooth bids --compat nilearn against the Python loop it replaces
(nilearn.image.smooth_img over a BIDS dataset's images, each saved as
.nii.gz), side by side in one run, on a dataset that make_bids_sample.py
builds. Prints a Markdown table; outputs are checked equal first.

Usage: python3 scripts/bench_bids.py [--subjects 6] [--reps 3] [--fwhm 6]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.image import smooth_img

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(os.environ.get("NISMOOTH_BIN", ROOT / "target" / "release" / "nismooth"))


def python_loop(raw, out, fwhm):
    """What a user writes today: every T1w and bold image, smoothed and saved."""
    for src in sorted(raw.rglob("*.nii.gz")):
        if not src.name.endswith(("_T1w.nii.gz", "_bold.nii.gz")):
            continue
        dest = out / src.relative_to(raw)
        dest.parent.mkdir(parents=True, exist_ok=True)
        smooth_img(str(src), fwhm).to_filename(str(dest))


def ours(raw, out, fwhm, threads, *extra):
    subprocess.run([str(BIN), "bids", str(raw), str(out), "participant", "--fwhm", str(fwhm),
                    "--compat", "nilearn", "--threads", str(threads), "--progress", "none", *extra],
                   check=True, capture_output=True)


def best(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fwhm", type=float, default=6.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_bids_sample.py"), str(raw),
                        "--subjects", str(a.subjects)], check=True)
        # Same data first: every output of ours equals nilearn's.
        ours(raw, tmp / "check", a.fwhm, 1)
        n = 0
        for out in sorted((tmp / "check").rglob("*.nii.gz")):
            rel = out.relative_to(tmp / "check")
            src = raw / str(rel).replace(f"_desc-smooth{a.fwhm:g}mm", "")
            want = np.asanyarray(smooth_img(str(src), a.fwhm).dataobj)
            got = np.asanyarray(nib.load(str(out)).dataobj)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), rel
            n += 1
        voxels = sum(np.prod(nib.load(str(p)).shape) for p in (tmp / "check").rglob("*.nii.gz"))
        rows = []
        k = 0

        def fresh():
            nonlocal k
            k += 1
            return tmp / f"o{k}"

        # Interleaved: each rep runs every contender once.
        times = {"python": [], "ours1": [], "ours1ns": [], "oursN": []}
        for _ in range(a.reps):
            for key, fn in [("python", lambda: python_loop(raw, fresh(), a.fwhm)),
                            ("ours1", lambda: ours(raw, fresh(), a.fwhm, 1)),
                            ("ours1ns", lambda: ours(raw, fresh(), a.fwhm, 1, "--no-sync")),
                            ("oursN", lambda: ours(raw, fresh(), a.fwhm, os.cpu_count()))]:
                times[key].append(best(fn, 1))
        py = min(times["python"])
        rows.append(("Python loop: nibabel + nilearn smooth_img + to_filename", py, 1.0))
        rows.append(("nismooth bids --compat nilearn, 1 thread", min(times["ours1"]),
                     py / min(times["ours1"])))
        rows.append(("nismooth bids --compat nilearn, 1 thread, --no-sync (no fsync, as Python)",
                     min(times["ours1ns"]), py / min(times["ours1ns"])))
        rows.append((f"nismooth bids --compat nilearn, {os.cpu_count()} threads", min(times["oursN"]),
                     py / min(times["oursN"])))
    print(f"{n} images ({voxels / 1e6:.1f} M voxels), FWHM {a.fwhm:g} mm, all equal to smooth_img; "
          f"best of {a.reps} interleaved runs\n")
    print("| run | wall (s) | speed-up |\n|---|---|---|")
    for name, t, r in rows:
        print(f"| {name} | {t:.2f} | {r:.1f}× |")


if __name__ == "__main__":
    main()
