#!/usr/bin/env python3
"""nismooth.gaussian_filter against scipy.ndimage.gaussian_filter on one
256×256×128 array, side by side in one run (interleaved, best of N), C- and
Fortran-ordered, at 1 thread and at every CPU. Results checked equal first.

Usage: python3 scripts/bench_python_api.py [--reps 7] [--dtype float32]
"""
import argparse
import os
import time

import numpy as np
from scipy import ndimage

import nismooth


def best(fn, reps):
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        fn()
        t.append(time.perf_counter() - s)
    return min(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    c = (rng.standard_normal((256, 256, 128)) * 300 + 500).astype(a.dtype)
    cpus = len(os.sched_getaffinity(0))
    print(f"256×256×128 {a.dtype}, σ 2, best of {a.reps}; {cpus} CPUs\n")
    print("| memory order | scipy (ms) | nismooth, 1 thread (ms) | × | nismooth, all CPUs (ms) | × |")
    print("|---|---|---|---|---|---|")
    for name, arr in [("C", c), ("Fortran (nibabel's)", np.asfortranarray(c))]:
        want = ndimage.gaussian_filter(arr, 2)
        assert np.array_equal(nismooth.gaussian_filter(arr, 2, threads=1), want)
        times = {"scipy": [], "one": [], "all": []}
        for _ in range(a.reps):
            times["scipy"].append(best(lambda: ndimage.gaussian_filter(arr, 2), 1))
            times["one"].append(best(lambda: nismooth.gaussian_filter(arr, 2, threads=1), 1))
            times["all"].append(best(lambda: nismooth.gaussian_filter(arr, 2), 1))
        s, o, n = (min(times[k]) * 1e3 for k in ("scipy", "one", "all"))
        print(f"| {name} | {s:.1f} | {o:.1f} | {s / o:.1f}× | {n:.1f} | {s / n:.1f}× |")


if __name__ == "__main__":
    main()
