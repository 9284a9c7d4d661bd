"""Side by side on the same images: the Python pipeline users run today vs nismooth.

Python: nibabel load -> scipy.ndimage.gaussian_filter(data, 2) -> nibabel save (.nii.gz, level 1).
nismooth: `nismooth run` on the same files, per-image times from its JSON report,
at 1 thread (equal cores) and at all cores. Also the filter alone, in memory.
Prints a Markdown table of per-image means and ratios (Python / nismooth).
"""
import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy
import scipy.ndimage as ndi


def python_pipeline(paths, outdir):
    rows = []
    for p in paths:
        t0 = time.perf_counter()
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
        t1 = time.perf_counter()
        out = ndi.gaussian_filter(data, 2)
        t2 = time.perf_counter()
        nib.save(nib.Nifti1Image(out, img.affine, img.header), str(outdir / p.name))
        t3 = time.perf_counter()
        rows.append((t1 - t0, t2 - t1, t3 - t2))
    return np.array(rows)


def nismooth_run(binary, indir, outdir, threads):
    report = outdir.with_suffix(".json")
    t0 = time.perf_counter()
    subprocess.run(
        [binary, "run", str(indir), "-o", str(outdir), "--threads", str(threads), "--report", str(report),
         "--progress", "none"],
        check=True, capture_output=True,
    )
    wall = time.perf_counter() - t0
    r = json.loads(report.read_text())
    rows = np.array([(i["read_s"], i["filter_s"], i["write_s"]) for i in r["images"]])
    return rows, wall, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/nismooth")
    ap.add_argument("-n", type=int, default=6)
    ap.add_argument("--shape", default="256,256,128")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nismooth-bench-"))
    indir = work / "in"
    subprocess.run([a.binary, "generate", "-o", str(indir), "-n", str(a.n), "--shape", a.shape,
                    "--dtype", a.dtype, "--seed", "42"], check=True, capture_output=True)
    paths = sorted(indir.iterdir())
    (work / "py").mkdir()

    py = python_pipeline(paths, work / "py")
    cores = os.cpu_count()
    ns1, wall1, _ = nismooth_run(a.binary, indir, work / "ns1", 1)
    nsN, wallN, rep = nismooth_run(a.binary, indir, work / "nsN", cores)

    # The filter alone, in memory, on the first image (best of 3).
    data = np.asanyarray(nib.load(str(paths[0])).dataobj)
    best = min((lambda: (time.perf_counter(), ndi.gaussian_filter(data, 2), time.perf_counter()))() for _ in range(3))
    scipy_filter = best[2] - best[0]

    # Same numbers out of both pipelines, and output sizes.
    for p in paths[:2]:
        ours = np.asanyarray(nib.load(str(work / "ns1" / p.name)).dataobj)
        theirs = np.asanyarray(nib.load(str(work / "py" / p.name)).dataobj)
        assert np.array_equal(ours, theirs), f"{p.name}: outputs differ"
    size_ratio = sum((work / "ns1" / p.name).stat().st_size for p in paths) / sum(
        (work / "py" / p.name).stat().st_size for p in paths)

    m_py, m1, mN = py.mean(0), ns1.mean(0), nsN.mean(0)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {cores} cores; "
        f"numpy {np.__version__}, scipy {scipy.__version__}, nibabel {nib.__version__}; "
        f"{a.n} {a.dtype} images {a.shape}, ~{paths[0].stat().st_size / 1e6:.1f} MB .nii.gz each.",
        "",
        "| per image (s) | Python (1 core) | nismooth 1 thread | ratio | nismooth " + f"{cores} threads | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k, name in enumerate(["read", "filter", "write"]):
        lines.append(f"| {name} | {m_py[k]:.3f} | {m1[k]:.3f} | {m_py[k] / m1[k]:.1f}× | {mN[k]:.3f} | {m_py[k] / mN[k]:.1f}× |")
    t_py, t1, tN = m_py.sum(), m1.sum(), mN.sum()
    lines.append(f"| **total** | **{t_py:.3f}** | **{t1:.3f}** | **{t_py / t1:.1f}×** | **{tN:.3f}** | **{t_py / tN:.1f}×** |")
    lines += [
        "",
        f"Whole run wall time: Python {py.sum():.2f} s, nismooth 1 thread {wall1:.2f} s "
        f"({py.sum() / wall1:.1f}×), {cores} threads {wallN:.2f} s ({py.sum() / wallN:.1f}×).",
        f"Filter alone, in memory, one image: scipy {scipy_filter:.3f} s; nismooth {m1[1]:.3f} s at 1 thread "
        f"({scipy_filter / m1[1]:.1f}×), {mN[1]:.3f} s at {cores} threads ({scipy_filter / mN[1]:.1f}×).",
        f"Outputs identical to the Python pipeline's (np.array_equal); nismooth's .nii.gz total size is "
        f"{100 * size_ratio:.1f}% of nibabel's.",
        f"nismooth peak RSS at {cores} threads: {rep['summary']['peak_rss_bytes'] / 2**20:.0f} MiB.",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
