#!/usr/bin/env python3
"""nismooth.gaussian_filter against scipy.ndimage.gaussian_filter on one
256×256×128 array, side by side in one run (interleaved, best of N), C- and
Fortran-ordered, at 1 thread and at every CPU; then every path of the
module at 1 thread, C-ordered (derivative orders, the 1-D, Laplace and
gradient-magnitude functions, complex input). Results checked equal first.

Usage: python3 scripts/bench_python_api.py [--reps 7] [--dtype float32] [--paths-only]
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
    ap.add_argument("--paths-only", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    c = (rng.standard_normal((256, 256, 128)) * 300 + 500).astype(a.dtype)
    cpus = len(os.sched_getaffinity(0))
    print(f"256×256×128 {a.dtype}, σ 2, best of {a.reps}; {cpus} CPUs\n")
    print("| memory order | scipy (ms) | nismooth, 1 thread (ms) | × | nismooth, all CPUs (ms) | × |")
    print("|---|---|---|---|---|---|")
    for name, arr in [] if a.paths_only else [("C", c), ("Fortran (nibabel's)", np.asfortranarray(c))]:
        want = ndimage.gaussian_filter(arr, 2)
        assert np.array_equal(nismooth.gaussian_filter(arr, 2, threads=1), want)
        times = {"scipy": [], "one": [], "all": []}
        for _ in range(a.reps):
            times["scipy"].append(best(lambda: ndimage.gaussian_filter(arr, 2), 1))
            times["one"].append(best(lambda: nismooth.gaussian_filter(arr, 2, threads=1), 1))
            times["all"].append(best(lambda: nismooth.gaussian_filter(arr, 2), 1))
        s, o, n = (min(times[k]) * 1e3 for k in ("scipy", "one", "all"))
        print(f"| {name} | {s:.1f} | {o:.1f} | {s / o:.1f}× | {n:.1f} | {s / n:.1f}× |")
    paths(c, a.reps)


PATHS = [
    ("gaussian_filter, order 0", "gaussian_filter", dict(sigma=2)),
    ("gaussian_filter, order 1", "gaussian_filter", dict(sigma=2, order=1)),
    ("gaussian_filter, orders [0, 1, 2]", "gaussian_filter", dict(sigma=2, order=[0, 1, 2])),
    ("gaussian_filter1d, axis 0", "gaussian_filter1d", dict(sigma=2, axis=0)),
    ("gaussian_laplace", "gaussian_laplace", dict(sigma=2)),
    ("gaussian_gradient_magnitude", "gaussian_gradient_magnitude", dict(sigma=2)),
]


def paths(c, reps):
    """Every path at 1 thread against scipy, interleaved, best of `reps`."""
    z = (c + 1j * c[::-1]).astype(np.complex64)
    rows = [(label, fn, c, kw) for label, fn, kw in PATHS]
    rows.append(("gaussian_filter, complex64", "gaussian_filter", z, dict(sigma=2)))
    print(f"\nEvery path, {c.dtype} (complex64 its own), C-ordered, 1 thread, best of {reps}\n")
    print("| call | scipy (ms) | nismooth (ms) | × |")
    print("|---|---|---|---|")
    for label, fn, arr, kw in rows:
        ref, ours = getattr(ndimage, fn), getattr(nismooth, fn)
        assert np.array_equal(ours(arr, threads=1, **kw), ref(arr, **kw)), label
        t_ref, t_ours = [], []
        for _ in range(reps):
            t_ref.append(best(lambda: ref(arr, **kw), 1))
            t_ours.append(best(lambda: ours(arr, threads=1, **kw), 1))
        s, o = min(t_ref) * 1e3, min(t_ours) * 1e3
        print(f"| {label} | {s:.1f} | {o:.1f} | {s / o:.1f}× |")


if __name__ == "__main__":
    main()
