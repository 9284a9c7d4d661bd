#!/usr/bin/env python3
"""Two nismooth binaries side by side: `bench-filter` at each SIMD level, interleaved
rounds (this VM drifts ±15-30% minute to minute), and their outputs compared byte for byte.

    scripts/bench_versions.py BEFORE_BINARY AFTER_BINARY [--rounds 7] [--json docs/x.json]
"""
import argparse, json, os, statistics, subprocess, tempfile
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("before"); p.add_argument("after")
p.add_argument("--rounds", type=int, default=7)
p.add_argument("--json")
a = p.parse_args()
work = Path(tempfile.mkdtemp())
images = {}
for dt in ["int16", "uint8", "float32", "float64"]:
    subprocess.run([a.after, "generate", "-o", work / dt, "-n", "1", "--shape", "256,256,192", "--dtype", dt],
                   check=True, capture_output=True)
    images[dt] = next((work / dt).glob("*.nii.gz"))

# Outputs: every dtype, several option sets, every level: byte-identical or not.
same = differ = 0
for lvl in ["avx512", "avx2", "scalar"]:
    for dt, img in images.items():
        for opts in [[], ["--mode", "constant", "--cval", "3"], ["--sigma", "1.3,0,2.5"], ["--dtype", "float32"]]:
            outs = []
            for name, b in [("before", a.before), ("after", a.after)]:
                out = work / f"out-{name}"
                subprocess.run([b, "run", img, "-o", out, "--progress", "none", "--no-sync", *opts],
                               check=True, capture_output=True, env={**os.environ, "NISMOOTH_SIMD": lvl})
                outs.append((out / img.name).read_bytes())
            same += outs[0] == outs[1]
            differ += outs[0] != outs[1]

times = {}
for rnd in range(a.rounds):
    for lvl in ["avx512", "avx2", "scalar"]:
        for dt in ["int16", "float32"]:
            order = [("before", a.before), ("after", a.after)]
            for name, b in order if rnd % 2 == 0 else order[::-1]:
                out = subprocess.run([b, "bench-filter", images[dt], "--reps", "7"], capture_output=True, text=True,
                                     check=True, env={**os.environ, "NISMOOTH_SIMD": lvl}).stdout
                times.setdefault((lvl, dt, name), []).append(json.loads(out.strip().splitlines()[-1])["median_s"])
rows = {}
print(f"outputs byte-identical: {same} of {same + differ}")
for lvl in ["avx512", "avx2", "scalar"]:
    for dt in ["int16", "float32"]:
        b, f = (statistics.median(times[(lvl, dt, n)]) for n in ("before", "after"))
        rows[f"{lvl}/{dt}"] = {"before_ms": round(b * 1e3, 2), "after_ms": round(f * 1e3, 2),
                               "after_over_before": round(f / b, 3)}
        print(f"{lvl:7} {dt:8} before {b * 1e3:7.2f} ms  after {f * 1e3:7.2f} ms  after/before {f / b:.3f}")
if a.json:
    Path(a.json).write_text(json.dumps({"image": "256x256x192 phantom, sigma 2, 1 thread",
                                        "statistic": f"median over {a.rounds} interleaved rounds of bench-filter's median of 7",
                                        "outputs_identical": [same, same + differ], "rows": rows}, indent=1) + "\n")
