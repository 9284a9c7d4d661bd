"""Writes tests/data/svml_exp_golden.txt: np.exp on an AVX-512 SKX machine (SVML path).

Arguments cover the Gaussian kernel range (-0.5 * x**2 / sigma**2) and random
values; each line is `x_bits y_bits` in hex. Regenerate only on an AVX-512 CPU.
"""
import sys
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as feats

if not all(feats.get(k) for k in ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")):
    sys.exit("this CPU lacks AVX512_SKX: numpy would not use SVML here")
rng = np.random.default_rng(7)
xs = [-0.5 / (s * s) * k * k for s in np.arange(0.05, 12, 0.05) for k in range(0, int(4 * s + 0.5) + 1)]
xs = np.concatenate([np.array(xs), -rng.uniform(0, 700, 3000), rng.uniform(-5, 5, 1000)])
ys = np.exp(xs)
with open(sys.argv[1], "w") as out:
    for x, y in zip(xs, ys):
        out.write(f"{np.float64(x).view(np.uint64):016x} {np.float64(y).view(np.uint64):016x}\n")
