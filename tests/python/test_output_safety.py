"""Output safety: outputs appear only whole, never through a symlink onto an
existing file, never over an input; a full or read-only output directory is a
clear error that leaves no temp file behind.

The disk-full and read-only cases mount a small tmpfs, which needs root (CI
runs as root; elsewhere they are skipped and say why).
"""
import json
import os
import subprocess
from contextlib import contextmanager

import pytest

from conftest import names, nismooth, noise, save
from test_reference import assert_exact, scipy_ref

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


@contextmanager
def tmpfs(path, options):
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_a_symlink_at_the_output_is_replaced_never_followed(tmp_path):
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "a.nii.gz", noise((8, 7, 6), "float32", 1))
    victim = tmp_path / "victim.nii.gz"
    victim.write_bytes(b"someone else's file")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").symlink_to(victim)
    nismooth("run", src, "-o", out)
    assert victim.read_bytes() == b"someone else's file"
    assert not (out / "a.nii.gz").is_symlink()
    assert_exact(out / "a.nii.gz", scipy_ref(src, 2.0))


def test_an_outdir_that_is_a_symlink_to_the_inputs_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "a.nii", noise((8, 7, 6), "int16", 1))
    before = src.read_bytes()
    (tmp_path / "out").symlink_to(tmp_path / "in")
    proc = nismooth("run", src, "-o", tmp_path / "out", expect=2)
    assert "holds input" in proc.stderr and "a.nii" in proc.stderr
    assert src.read_bytes() == before and names(tmp_path / "in") == ["a.nii"]


@needs_root
def test_a_read_only_outdir_is_refused_up_front(tmp_path):
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "a.nii", noise((8, 7, 6), "int16", 1))
    with tmpfs(tmp_path / "out", "ro,size=1m") as out:
        proc = nismooth("run", src, "-o", out, expect=2)
        assert "not writable" in proc.stderr and "Read-only file system" in proc.stderr, proc.stderr
        assert os.listdir(out) == []


@needs_root
def test_disk_full_fails_the_images_that_do_not_fit_and_leaves_no_temp_file(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    srcs = [save(d / f"img{i}.nii", noise((64, 64, 32), "float32", i)) for i in range(5)]
    size = srcs[0].stat().st_size  # 512 KiB of voxels and a header
    report = tmp_path / "r.json"
    # Room for two outputs (and the journal), not three.
    with tmpfs(tmp_path / "out", f"size={(2 * size + 200_000) // 1024}k") as out:
        proc = nismooth("run", d, "-o", out, "--threads", "1", "--report", report, expect=1)
        r = json.loads(report.read_text())
        ok = [i for i in r["images"] if i["status"] == "ok"]
        failed = [i for i in r["images"] if i["status"] == "failed"]
        assert len(ok) == 2 and len(failed) == 3, [(i["input"], i["status"]) for i in r["images"]]
        for rec in failed:
            assert "No space left on device" in rec["error"], rec["error"]
            name = os.path.basename(rec["input"])
            assert any(name in l and "No space left" in l for l in proc.stderr.splitlines())
        written = sorted(os.path.basename(i["output"]) for i in ok)
        assert names(out) == written, "only whole outputs, no temp files"
        for n in written:
            assert_exact(out / n, scipy_ref(d / n, 2.0))
