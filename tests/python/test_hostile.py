"""Hostile and unusual inputs, and the formats beyond a plain NIfTI-1 file.

Every hostile file goes into one directory with good images: each bad one
must fail alone with a message that names the file and the cause, every good
one must still come out bit-exact with scipy, the exit code must be 1, and
nothing half-written may be left. The unusual-but-valid files (NaN and Inf
voxels, NIfTI-2, .hdr/.img pairs, multi-member gzip) must come out exactly as
scipy smooths what nibabel reads.
"""
import gzip
import json
import os
import struct
import zlib

import nibabel as nib
import numpy as np
import pytest

from conftest import names, nismooth, noise, read_bytes, save
from test_reference import assert_exact, scipy_ref

SHAPE = (9, 8, 7)


def nifti1_bytes(data, patch=None):
    """A NIfTI-1 file's bytes (uncompressed) made by nibabel, then patched:
    patch maps a byte offset to (struct format, value)."""
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_data_dtype(data.dtype)
    img.header["vox_offset"] = 352
    raw = bytearray(img.header.binaryblock + b"\0" * 4 + data.tobytes(order="F"))
    for off, (fmt, value) in (patch or {}).items():
        struct.pack_into(fmt, raw, off, value)
    return bytes(raw)


def hostile_files(d):
    """name → (bytes, a piece of the expected error message)."""
    good = noise(SHAPE, "float32", 7)
    plain = nifti1_bytes(good)
    gz = gzip.compress(plain, compresslevel=1)
    dims = lambda *v: {40 + 2 * i: ("<h", x) for i, x in enumerate(v)}  # noqa: E731
    files = {
        "truncated_gzip.nii.gz": (gz[: len(gz) // 2], "gzip"),
        "truncated_gzip_header.nii.gz": (gz[:40], "gzip"),
        "gzip_bad_crc.nii.gz": (gz[:-8] + bytes(4) + gz[-4:], "gzip"),
        "empty.nii": (b"", "too short"),
        "wrong_magic.nii": (nifti1_bytes(good, {344: ("4s", b"xyz\0")}), "magic"),
        "wrong_sizeof_hdr.nii": (nifti1_bytes(good, {0: ("<i", 349)}), "sizeof_hdr is 349"),
        "dims_beyond_data.nii": (nifti1_bytes(good, dims(3, 9, 8, 70)), "header claims"),
        "dims_beyond_data.nii.gz": (
            gzip.compress(nifti1_bytes(good, dims(3, 9, 8, 70))), "stream ends inside the voxel data"),
        "dims_1e12.nii": (nifti1_bytes(good, dims(4, 32767, 32767, 1000, 1)), "header claims"),
        "dims_1e12.nii.gz": (gzip.compress(nifti1_bytes(good, dims(4, 32767, 32767, 1000, 1))), "header claims"),
        "zero_dim.nii": (nifti1_bytes(good, dims(3, 9, 0, 7)), "dim[2] = 0"),
        "ndim_9.nii": (nifti1_bytes(good, dims(9)), "dim[0] = 9"),
        "complex64.nii": (nifti1_bytes(good, {70: ("<h", 32), 72: ("<h", 64)}), "complex64"),
        "rgb24.nii": (nifti1_bytes(good, {70: ("<h", 128), 72: ("<h", 24)}), "RGB24"),
        "vox_offset_beyond_end.nii": (nifti1_bytes(good, {108: ("<f", 1e6)}), "beyond the end"),
        "vox_offset_inside_header.nii": (nifti1_bytes(good, {108: ("<f", 100.0)}), "invalid vox_offset"),
        "vox_offset_fraction.nii": (nifti1_bytes(good, {108: ("<f", 352.5)}), "invalid vox_offset"),
        "scl_inter_nan.nii": (nifti1_bytes(good, {112: ("<f", 2.0), 116: ("<f", float("nan"))}),
                              "scl_inter"),
        "pair_magic_in_single.nii": (nifti1_bytes(good, {344: ("4s", b"ni1\0")}), ".hdr/.img pair"),
        "analyze.hdr": (nifti1_bytes(good, {344: ("4s", bytes(4))})[:348], "Analyze 7.5"),
        "lonely.hdr": (nifti1_bytes(good, {344: ("4s", b"ni1\0"), 108: ("<f", 0.0)})[:348],
                       "lonely.img"),
    }
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    # The analyze header's data file exists, so that only the magic is wrong.
    (d / "analyze.img").write_bytes(good.tobytes(order="F"))
    return {n: msg for n, (_, msg) in files.items()}


def test_every_hostile_input_fails_alone_with_a_clear_error(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = [save(d / f"good{i}.nii.gz", noise(SHAPE, "int16", i)) for i in range(2)]
    expected = hostile_files(d)
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = nismooth("run", d, "-o", out, "--report", report, "--threads", "1", expect=1)
    r = json.loads(report.read_text())
    by_name = {os.path.basename(i["input"]): i for i in r["images"]}
    assert set(by_name) == set(expected) | {p.name for p in good}, "every .nii/.nii.gz/.hdr, no .img"
    for name, msg in expected.items():
        rec = by_name[name]
        assert rec["status"] == "failed", (name, rec)
        assert msg in rec["error"], (name, rec["error"])
        line = next((l for l in proc.stderr.splitlines() if name in l and msg in l), None)
        assert line is not None, f"stderr names {name} and says {msg!r}"
    for p in good:
        assert_exact(out / p.name, scipy_ref(p, 2.0))
    assert names(out) == sorted(p.name for p in good), "nothing half-written, no temp files"
    assert r["summary"]["failed"] == len(expected)
    # The 10^12-voxel claims were refused before any allocation.
    assert max(p["peak_rss_bytes"] for p in r["processes"]) < 200 << 20


def test_nan_and_inf_propagate_as_scipy(tmp_path):
    data = noise((40, 36, 30), "float32", 3)
    data[5, 5, 5] = np.nan
    data[30, 30, 22] = np.inf
    data[0, 35, 0] = -np.inf
    data[20, 10, 25] = np.inf
    data[21, 10, 25] = -np.inf  # +inf meets -inf: NaN, as in scipy
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "nan.nii", data)
    for mode in ["reflect", "constant", "wrap"]:
        out = tmp_path / f"out_{mode}"
        nismooth("run", src, "-o", out, "--mode", mode, "--sigma", "1")
        got = np.asanyarray(nib.load(str(out / "nan.nii")).dataobj)
        ref = scipy_ref(src, 1.0, mode=mode)
        assert np.isnan(ref).any() and np.isinf(ref).any()
        assert np.array_equal(got, ref, equal_nan=True), mode


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
@pytest.mark.parametrize("endianness", ["<", ">"])
def test_nifti2_read_and_written_as_nifti2(tmp_path, ext, endianness):
    (tmp_path / "in").mkdir()
    data = noise((11, 9, 6, 2), "int16", 5)
    affine = np.diag([1.5, 2.0, 2.5, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    hdr = nib.Nifti2Header(endianness=endianness)
    hdr.set_data_dtype(np.int16)
    img = nib.Nifti2Image(data, affine, header=hdr)
    img.header.set_slope_inter(2.0, -3.0)  # scaled: presented as float64
    src = tmp_path / "in" / f"v2{ext}"
    nib.save(img, str(src))
    nismooth("run", src, "-o", tmp_path / "out", "--sigma", "1.5,1,0.5")
    out = nib.load(str(tmp_path / "out" / src.name))
    assert isinstance(out, nib.Nifti2Image) and out.header.endianness == endianness
    assert out.header["sizeof_hdr"] == 540
    assert np.array_equal(out.affine, nib.load(str(src)).affine)
    assert_exact(tmp_path / "out" / src.name, scipy_ref(src, (1.5, 1, 0.5)))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compressed", [False, True])
def test_hdr_img_pairs_become_single_files(tmp_path, version, compressed):
    (tmp_path / "in").mkdir()
    data = noise((10, 7, 5), "float32", version)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    cls = nib.Nifti1Pair if version == 1 else nib.Nifti2Pair
    src = tmp_path / "in" / ("pair.hdr.gz" if compressed else "pair.hdr")
    nib.save(cls(data, affine), str(src))
    assert (tmp_path / "in" / ("pair.img.gz" if compressed else "pair.img")).exists()
    nismooth("run", tmp_path / "in", "-o", tmp_path / "out", "--sigma", "1.2")
    out_name = "pair.nii.gz" if compressed else "pair.nii"
    assert names(tmp_path / "out") == [out_name]
    out = nib.load(str(tmp_path / "out" / out_name))
    assert isinstance(out, nib.Nifti1Image if version == 1 else nib.Nifti2Image)
    assert np.array_equal(out.affine, nib.load(str(src)).affine)
    assert_exact(tmp_path / "out" / out_name, scipy_ref(src, 1.2))


def test_multi_member_gzip_is_read_in_full(tmp_path):
    """BGZF-style input: many gzip members of 64 KiB each, then an empty one."""
    (tmp_path / "in").mkdir()
    plain = tmp_path / "plain.nii"
    save(plain, noise((40, 30, 20), "float32", 9))
    raw = plain.read_bytes()
    members = [gzip.compress(raw[i:i + 65280], compresslevel=1) for i in range(0, len(raw), 65280)]
    members.append(gzip.compress(b""))
    src = tmp_path / "in" / "bgzf.nii.gz"
    src.write_bytes(b"".join(members))
    # One member alone would not hold the image.
    assert len(zlib.decompressobj(31).decompress(src.read_bytes())) < len(raw)
    nismooth("run", src, "-o", tmp_path / "out")
    assert_exact(tmp_path / "out" / src.name, scipy_ref(plain, 2.0))


def test_extensions_survive(tmp_path):
    """Header extensions between the header and the data are kept verbatim."""
    (tmp_path / "in").mkdir()
    img = nib.Nifti1Image(noise(SHAPE, "float32", 1), np.eye(4))
    img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"kept by nismooth" * 5))
    src = tmp_path / "in" / "ext.nii.gz"
    nib.save(img, str(src))
    nismooth("run", src, "-o", tmp_path / "out")
    out = nib.load(str(tmp_path / "out" / "ext.nii.gz"))
    assert [e.get_content() for e in out.header.extensions] == [b"kept by nismooth" * 5]
    end = int(out.header["vox_offset"])
    assert read_bytes(src)[348:end] == read_bytes(tmp_path / "out" / "ext.nii.gz")[348:end]
    assert_exact(tmp_path / "out" / "ext.nii.gz", scipy_ref(src, 2.0))
