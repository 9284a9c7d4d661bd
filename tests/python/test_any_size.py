"""Images of any size: a 4-D series is read, filtered and written a few volumes at a time, so a
process's memory follows the volume, not the series; the bytes are those of the whole image at once
(scipy's `gaussian_filter(data, (σ, σ, σ, 0))`), for every container and byte order nibabel writes.
A series larger than its process's memory cgroup is smoothed inside it; a cut series fails alone with
nothing half-written; a kill -9 in the middle of one, then `--resume`, gives the uninterrupted bytes.
"""
import contextlib
import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from conftest import BIN

MIB = 1 << 20


def run(*args, expect=0):
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == expect, proc.stderr
    return proc


def series(path, shape, dtype=np.int16, seed=0, **header):
    """A noisy series written by nibabel (NIfTI-1 unless `nifti2`)."""
    rng = np.random.default_rng(seed)
    data = (rng.random(shape) * 1000).astype(dtype)
    cls = nib.Nifti2Image if header.pop("nifti2", False) else nib.Nifti1Image
    img = cls(data, np.diag([2.0, 2.0, 2.5, 1.0]))
    for k, v in header.items():
        img.header[k] = v
    nib.save(img, path)
    return data


def peak(report):
    return json.loads(Path(report).read_text())["summary"]["peak_rss_bytes"]


def smoothed_volumes(data, sigma=2.0):
    """scipy per volume: with σ 0 along time, scipy's 4-D filter is exactly this."""
    out = np.empty_like(data)
    for t in range(data.shape[3]):
        out[..., t] = gaussian_filter(data[..., t], sigma)
    return out


def test_memory_follows_the_volume_not_the_series(tmp_path):
    """64×64×40 int16: 60 volumes (19 MiB) against 600 (188 MiB), one thread."""
    short, long_ = tmp_path / "short.nii.gz", tmp_path / "long.nii.gz"
    series(short, (64, 64, 40, 60), seed=1)
    data = series(long_, (64, 64, 40, 600), seed=2)
    peaks = {}
    for name, src in (("short", short), ("long", long_)):
        out, report = tmp_path / f"out-{name}", tmp_path / f"{name}.json"
        run("run", src, "-o", out, "--threads", "1", "--no-sync", "--report", report)
        peaks[name] = peak(report)
    print(f"peak RSS: 60 volumes {peaks['short'] / MIB:.1f} MiB, 600 volumes {peaks['long'] / MIB:.1f} MiB "
          f"(the series alone is {data.nbytes / MIB:.0f} MiB)")
    assert peaks["long"] <= 1.25 * peaks["short"] + 16 * MIB
    got = np.asanyarray(nib.load(tmp_path / "out-long" / "long.nii.gz").dataobj)
    # Every volume at a part's edge (parts of 25 volumes here), and a few inside.
    for t in (0, 1, 24, 25, 26, 49, 50, 299, 300, 574, 575, 598, 599):
        assert np.array_equal(got[..., t], gaussian_filter(data[..., t], 2.0)), t


@pytest.mark.parametrize("case", ["scaled int16", "big-endian float32", "NIfTI-2", ".nii out", "pair",
                                  "odd volumes, float64"])
def test_a_streamed_series_is_scipys_bytes_in_every_container(tmp_path, case):
    shape = (48, 40, 30, 23)
    src = tmp_path / "in" / "s.nii.gz"
    src.parent.mkdir()
    extra = []
    if case == "scaled int16":
        # nibabel picks its own scaling on save: the header's is patched in afterwards.
        plain = tmp_path / "plain.nii"
        series(plain, shape)
        raw = bytearray(plain.read_bytes())
        raw[112:120] = np.array([0.5, 3.0], "<f4").tobytes()
        src.write_bytes(gzip.compress(bytes(raw), 1))
    elif case == "big-endian float32":
        data = np.random.default_rng(3).random(shape).astype(">f4") * 100
        img = nib.Nifti1Image(data, np.eye(4))
        img.header.set_data_dtype(">f4")
        nib.save(img, src)
    elif case == "NIfTI-2":
        series(src, shape, nifti2=True)
    elif case == ".nii out":
        series(src, shape)
        extra = ["--format", "nii"]
    elif case == "pair":
        src = src.with_name("s.hdr")
        data = (np.random.default_rng(4).random(shape) * 1000).astype(np.int16)
        nib.save(nib.Nifti1Pair(data, np.eye(4)), src)
    else:
        series(src, (40, 36, 28, 37), dtype=np.float64)
    # Parts of one volume each: every volume crosses a part edge.
    out = tmp_path / "out"
    proc = subprocess.run([str(BIN), "run", src, "-o", out, "--threads", "2", *extra], capture_output=True,
                          text=True, env=dict(os.environ, NISMOOTH_PART_BYTES="1"))
    assert proc.returncode == 0, proc.stderr
    written = next(p for p in out.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    want_img = nib.load(src)
    want = smoothed_volumes(np.asanyarray(want_img.dataobj) if not want_img.header.get_slope_inter()[0]
                            else want_img.get_fdata())
    got = np.asanyarray(nib.load(written).dataobj)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # The same bytes as the whole image at once.
    whole = tmp_path / "whole"
    run("run", src, "-o", whole, "--threads", "2", *extra)
    assert written.read_bytes() == (whole / written.name).read_bytes()


def cgroup_v1():
    root = Path("/sys/fs/cgroup/memory")
    return root if (root / "memory.limit_in_bytes").exists() and os.geteuid() == 0 else None


@contextlib.contextmanager
def memory_cgroup(limit):
    """A cgroup v1 memory group of `limit` bytes (swap too, where accounted); yields the command prefix
    that runs a command inside it."""
    root = cgroup_v1()
    if root is None:
        pytest.skip("needs the cgroup v1 memory controller, as root")
    group = root / f"nismooth-test-{os.getpid()}-{limit}"
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        swap = group / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(limit))
        yield ["sh", "-c", f'echo $$ > {group}/tasks && exec "$@"', "sh"]
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def test_a_series_twice_a_memory_cgroup_is_smoothed_inside_it(tmp_path):
    src = tmp_path / "big.nii"
    data = series(src, (96, 96, 60, 48), dtype=np.float32, seed=5)  # 101 MiB, in a 64 MiB cgroup
    out, report = tmp_path / "out", tmp_path / "r.json"
    with memory_cgroup(64 * MIB) as inside:
        proc = subprocess.run([*inside, str(BIN), "run", str(src), "-o", str(out), "--threads", "1", "--no-sync",
                               "--report", str(report)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    print(f"series {data.nbytes / MIB:.0f} MiB in a 64 MiB cgroup: peak RSS {peak(report) / MIB:.1f} MiB")
    got = np.asanyarray(nib.load(out / "big.nii").dataobj)
    for t in (0, 20, 47):
        assert np.array_equal(got[..., t], gaussian_filter(data[..., t], 2.0)), t


def test_a_cut_series_fails_alone_and_leaves_nothing(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    series(d / "a.nii.gz", (48, 40, 30, 80), seed=6)
    series(d / "b.nii.gz", (48, 40, 30, 80), seed=7)
    cut = (d / "b.nii.gz").read_bytes()
    (d / "b.nii.gz").write_bytes(cut[: len(cut) * 2 // 3])
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = run("run", d, "-o", out, "--report", report, expect=1)
    assert "b.nii.gz" in proc.stderr
    st = {Path(i["input"]).name: i["status"] for i in json.loads(report.read_text())["images"]}
    assert st == {"a.nii.gz": "ok", "b.nii.gz": "failed"}
    assert sorted(p.name for p in out.iterdir() if p.name != ".nismooth") == ["a.nii.gz"]


def test_a_kill_in_the_middle_of_a_series_then_resume_gives_the_whole(tmp_path):
    src = tmp_path / "in" / "long.nii.gz"
    src.parent.mkdir()
    series(src, (64, 64, 40, 900), seed=8)
    whole = tmp_path / "whole"
    run("run", src.parent, "-o", whole, "--threads", "1", "--no-sync")
    out = tmp_path / "out"
    p = subprocess.Popen([str(BIN), "run", src.parent, "-o", out, "--threads", "1", "--no-sync"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Mid-series: its temp file has grown past its first parts.
    until = time.monotonic() + 30
    while time.monotonic() < until:
        temps = [t for t in out.glob(".*.tmp")] if out.exists() else []
        if temps and temps[0].stat().st_size > 4 * MIB:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "long.nii.gz").exists(), "no output under its name before it is whole"
    run("run", src.parent, "-o", out, "--threads", "1", "--no-sync", "--resume")
    assert (out / "long.nii.gz").read_bytes() == (whole / "long.nii.gz").read_bytes()
    assert list(out.glob(".*.tmp")) == []


# 3-D images in z-slabs ------------------------------------------------------------------------------

SLABS = dict(os.environ, NISMOOTH_PART_BYTES="1")  # slabs of one slice: every slice crosses a slab edge


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest", "constant", "wrap"])
@pytest.mark.parametrize("shape,sigma", [((30, 26, 40), "1.5"), ((20, 18, 33), "2,0,3.3"), ((16, 14, 9), "2"),
                                         ((16, 14, 1), "1")])
def test_slabs_are_scipys_bytes_for_every_mode(tmp_path, mode, shape, sigma):
    """Odd radii (σz 3.3 → r 13 over 33 slices), fewer slices than 2r + 1 and a single slice (both
    taken whole), and wrap (taken whole: its neighbours are at the other end)."""
    src = tmp_path / "in" / "a.nii.gz"
    src.parent.mkdir()
    data = series(src, shape, dtype=np.float32, seed=9)
    out = tmp_path / "out"
    proc = subprocess.run([str(BIN), "run", src.parent, "-o", out, "--sigma", sigma, "--mode", mode, "--cval", "4",
                           "--threads", "2"], capture_output=True, text=True, env=SLABS)
    assert proc.returncode == 0, proc.stderr
    sig = [float(x) for x in sigma.split(",")] if "," in sigma else float(sigma)
    want = gaussian_filter(data, sig, mode=mode, cval=4.0)
    assert np.array_equal(np.asanyarray(nib.load(out / "a.nii.gz").dataobj), want)


@pytest.mark.parametrize("case", ["scaled int16", "big-endian int16", "NIfTI-2 uint8", "int16 to float32"])
def test_slabs_in_every_container_and_dtype(tmp_path, case):
    shape = (40, 36, 50)
    src = tmp_path / "in" / "a.nii.gz"
    src.parent.mkdir()
    extra = []
    if case == "scaled int16":
        plain = tmp_path / "plain.nii"
        series(plain, shape, seed=10)
        raw = bytearray(plain.read_bytes())
        raw[112:120] = np.array([0.25, -7.0], "<f4").tobytes()
        src.write_bytes(gzip.compress(bytes(raw), 1))
    elif case == "big-endian int16":
        data = (np.random.default_rng(11).random(shape) * 3000).astype(">i2")
        img = nib.Nifti1Image(data, np.eye(4))
        img.header.set_data_dtype(">i2")
        nib.save(img, src)
    elif case == "NIfTI-2 uint8":
        series(src, shape, dtype=np.uint8, nifti2=True)
    else:
        series(src, shape, seed=12)
        extra = ["--dtype", "float32"]
    out = tmp_path / "out"
    proc = subprocess.run([str(BIN), "run", src.parent, "-o", out, "--threads", "2", *extra], capture_output=True,
                          text=True, env=SLABS)
    assert proc.returncode == 0, proc.stderr
    whole = tmp_path / "whole"
    run("run", src.parent, "-o", whole, "--threads", "2", *extra)
    assert (out / "a.nii.gz").read_bytes() == (whole / "a.nii.gz").read_bytes()
    img = nib.load(src)
    data = img.get_fdata() if case == "scaled int16" else np.asanyarray(img.dataobj)
    want = gaussian_filter(data, 2.0, output=np.float32 if extra else None)
    assert np.array_equal(np.asanyarray(nib.load(out / "a.nii.gz").dataobj), want)


def test_a_256_mib_image_in_slabs_under_96_mib_and_inside_a_128_mib_cgroup(tmp_path):
    src = tmp_path / "in" / "big.nii"
    src.parent.mkdir()
    data = series(src, (512, 512, 256), dtype=np.float32, seed=13)
    out, report = tmp_path / "out", tmp_path / "r.json"
    run("run", src.parent, "-o", out, "--threads", "1", "--no-sync", "--report", report)
    print(f"512×512×256 float32 (256 MiB): peak RSS {peak(report) / MIB:.1f} MiB")
    assert peak(report) <= 96 * MIB
    assert np.array_equal(np.asanyarray(nib.load(out / "big.nii").dataobj), gaussian_filter(data, 2.0))
    caged = tmp_path / "caged"
    with memory_cgroup(128 * MIB) as inside:
        proc = subprocess.run([*inside, str(BIN), "run", str(src.parent), "-o", str(caged), "--threads", "1",
                               "--no-sync"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (caged / "big.nii").read_bytes() == (out / "big.nii").read_bytes()
