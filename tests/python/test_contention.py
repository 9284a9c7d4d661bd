"""Small images on a shared node: the pipeline's hand-offs must sleep, not yield.

Before sleeping, std's channels and rayon's idle workers call sched_yield a
few times per hand-off. On a node where every core also runs someone else's
busy process, each yield gives the core away for a whole time slice, and a run
of thousands of small images slowed down fifteenfold (docs/performance.md,
"Small images on a busy node"). Timing that here would be noise; the cause is
countable: strace counts the yields, which were about 17 per image and are
now a few dozen for the whole run (the pools' start).
"""
import re
import shutil
import subprocess

import pytest

from conftest import BIN

IMAGES = 1000


def yields(cmd, log):
    subprocess.run(["strace", "-f", "-c", "-e", "trace=sched_yield", "-o", str(log)] + cmd,
                   check=True, capture_output=True)
    m = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?sched_yield", log.read_text(), re.M)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    subprocess.run([str(BIN), "generate", "-q", "-o", str(d / "in"), "-n", str(IMAGES), "--shape", "8,8,8"],
                   check=True, capture_output=True)
    return d


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fmt", ["nii.gz", "nii"])
def test_many_small_images_hand_off_without_yielding(tiny, threads, fmt):
    if shutil.which("strace") is None:
        pytest.skip("no strace")
    out = tiny / f"out-{threads}-{fmt}"
    cmd = [str(BIN), "run", str(tiny / "in"), "-o", str(out), "-q", "--threads", str(threads),
           "--format", fmt, "--no-sync"]
    n = yields(cmd, tiny / f"strace-{threads}-{fmt}.txt")
    assert len(list(out.glob("*.nii*"))) == IMAGES
    # Now: a few dozen, from the thread pools' first idle rounds. Before: ~17 per image.
    assert n < IMAGES // 4, f"{n} sched_yield calls for {IMAGES} images"
