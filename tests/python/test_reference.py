"""nismooth against the real references: scipy.ndimage.gaussian_filter on nibabel-loaded data.

Every comparison is bit for bit (np.array_equal on equal dtypes, max |diff| == 0).
"""
import json
import zlib

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.ndimage._filters import _gaussian_kernel1d

from conftest import header_bytes_without_type_fields, names, nismooth, noise, read_bytes, save

SHAPES = [(1, 9, 8), (5, 6, 7), (3, 2, 40), (24, 20, 16), (17, 1, 3)]
DTYPES = ["float32", "int16", "uint8"]
MODES = ["reflect", "nearest", "mirror", "constant", "wrap"]


def scipy_ref(path, sigma, **kw):
    data = np.asanyarray(nib.load(str(path)).dataobj)
    if data.ndim == 4:
        return np.stack([ndi.gaussian_filter(data[..., t], sigma, **kw) for t in range(data.shape[3])], axis=-1)
    return ndi.gaussian_filter(data, sigma, **kw)


def assert_exact(out_path, ref):
    out = np.asanyarray(nib.load(str(out_path)).dataobj)
    # Outputs keep the input's byte order; compare the type itself.
    same_type = out.dtype.newbyteorder("=") == ref.dtype.newbyteorder("=")
    assert same_type, f"{out_path}: dtype {out.dtype} != scipy's {ref.dtype}"
    assert out.shape == ref.shape
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()
    assert diff == 0 and np.array_equal(out, ref), f"{out_path}: max |diff| {diff}"


def assert_same_header(inp, out):
    a, b = nib.load(str(inp)), nib.load(str(out))
    assert np.array_equal(a.affine, b.affine)
    assert header_bytes_without_type_fields(inp) == header_bytes_without_type_fields(out)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    paths = []
    for i, (shape, dtype) in enumerate((s, t) for s in SHAPES for t in DTYPES):
        ext = ".nii.gz" if i % 2 else ".nii"
        paths.append(save(d / f"img{i:02d}_{dtype}{ext}", noise(shape, dtype, i)))
    return d, paths


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sigma", ["2", "1,2,3", "0.7"])
def test_bit_exact_every_mode_dtype_shape(tmp_path, small_set, mode, sigma):
    d, paths = small_set
    out = tmp_path / "out"
    nismooth("run", d, "-o", out, "--sigma", sigma, "--mode", mode, "--cval", "5.5", "--threads", "2")
    s = [float(v) for v in sigma.split(",")]
    s = s[0] if len(s) == 1 else s
    for p in paths:
        o = out / p.name
        assert_exact(o, scipy_ref(p, s, mode=mode, cval=5.5))
        assert_same_header(p, o)


def structured_integers(shape, dtype, seed):
    """Integer images whose smoothed values land on and next to integers, where
    nismooth's f32 kernel for integer images must hand over to f64: constant
    blocks (some at the top of the range), linear ramps (which a symmetric
    kernel reproduces), hard steps, and noise; int16 also gets a negative
    corner, whose tiles must take the f64 way."""
    info = np.iinfo(dtype)
    top = min(int(info.max), 32767)
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape)
    img = rng.integers(0, top, size=shape, endpoint=True)
    band = (x // 8 + z // 10) % 5
    img[band == 0] = top
    img[band == 1] = (3 * x + 5 * y + 7 * z)[band == 1] % (top + 1)
    img[band == 2] = 1000 % (top + 1)
    img[band == 3] = np.where((y // 3) % 2 == 0, top, 0)[band == 3]
    if info.min < 0:
        img[:12, :10, :6] = -rng.integers(0, 20000, size=(12, 10, 6))
    return img.astype(dtype)


@pytest.mark.parametrize("mode,cval", [("reflect", 0), ("nearest", 0), ("mirror", 0), ("wrap", 0),
                                       ("constant", 0), ("constant", 7), ("constant", 5.5)])
@pytest.mark.parametrize("sigma", ["2", "0.7,3,5"])
def test_integer_images_on_and_beside_integers(tmp_path, mode, cval, sigma):
    # x = 64 and 80: full 64-lane tiles (the f32 kernel) and a 16-lane remainder.
    (tmp_path / "in").mkdir()
    paths = [save(tmp_path / "in" / f"{dtype}_{shape[0]}.nii", structured_integers(shape, dtype, i))
             for i, (dtype, shape) in enumerate((d, s) for d in ["int16", "uint8"]
                                                for s in [(64, 48, 40), (80, 33, 20)])]
    nismooth("run", tmp_path / "in", "-o", tmp_path / "out", "--sigma", sigma, "--mode", mode,
             "--cval", str(cval))
    s = [float(v) for v in sigma.split(",")]
    for p in paths:
        assert_exact(tmp_path / "out" / p.name, scipy_ref(p, s if len(s) > 1 else s[0], mode=mode, cval=cval))


@pytest.mark.parametrize("simd", ["avx2", "scalar"])
def test_narrower_vector_code_gives_the_same_bits(tmp_path, small_set, simd):
    # CI's CPU has AVX-512; NISMOOTH_SIMD caps the filter at the code that
    # AVX2-only CPUs (Zen 2/3, Haswell to Coffee Lake) or others run.
    d, paths = small_set
    probe = nismooth("bench-filter", paths[0], "--reps", "1", env={"NISMOOTH_SIMD": simd})
    assert json.loads(probe.stdout)["simd"] == simd, "NISMOOTH_SIMD did not cap the vector code"
    ints = tmp_path / "ints"
    ints.mkdir()
    paths = paths + [save(ints / f"s_{dt}.nii", structured_integers((64, 33, 20), dt, 1)) for dt in ["int16", "uint8"]]
    for src in (d, ints):
        for mode, sigma in (("reflect", "2"), ("constant", "0.7,3,5")):
            out = tmp_path / f"out-{src.name}-{mode}"
            nismooth("run", src, "-o", out, "--sigma", sigma, "--mode", mode, "--cval", "7", "--threads", "2",
                     env={"NISMOOTH_SIMD": simd})
            s = [float(v) for v in sigma.split(",")]
            for p in paths:
                if p.parent == src:
                    assert_exact(out / p.name, scipy_ref(p, s if len(s) > 1 else s[0], mode=mode, cval=7))


def test_truncate_and_a_kernel_longer_than_every_axis(tmp_path, small_set):
    d, paths = small_set
    nismooth("run", d, "-o", tmp_path / "o", "--sigma", "6", "--truncate", "2.5", "--mode", "mirror")
    for p in paths:
        assert_exact(tmp_path / "o" / p.name, scipy_ref(p, 6.0, mode="mirror", truncate=2.5))


def test_realistic_phantoms_all_dtypes(tmp_path):
    for dtype in DTYPES:
        g = tmp_path / f"g_{dtype}"
        nismooth("generate", "-o", g, "-n", "2", "--shape", "64,60,36", "--dtype", dtype, "--seed", "3")
        nismooth("run", g, "-o", tmp_path / f"o_{dtype}")
        for p in sorted(g.iterdir()):
            assert nib.load(str(p)).get_data_dtype() == np.dtype(dtype)
            assert_exact(tmp_path / f"o_{dtype}" / p.name, scipy_ref(p, 2.0))
            assert_same_header(p, tmp_path / f"o_{dtype}" / p.name)


def test_units_mm_with_anisotropic_voxels(tmp_path):
    affine = np.diag([1.0, 1.5, 2.5, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    p = save(tmp_path / "aniso.nii.gz", noise((20, 18, 12), "float32", 1), affine=affine)
    nismooth("run", p, "-o", tmp_path / "o", "--sigma", "3", "--units", "mm")
    zooms = np.array(nib.load(str(p)).header.get_zooms(), dtype=np.float32).astype(np.float64)
    assert_exact(tmp_path / "o" / p.name, scipy_ref(p, list(3.0 / zooms)))
    assert_same_header(p, tmp_path / "o" / p.name)


def test_4d_is_smoothed_volume_by_volume(tmp_path):
    p = save(tmp_path / "bold.nii.gz", noise((12, 10, 8, 4), "int16", 2))
    nismooth("run", p, "-o", tmp_path / "o")
    ref = scipy_ref(p, 2.0)
    assert_exact(tmp_path / "o" / p.name, ref)
    # ...which is not what scipy gives on the raw 4-D array (it would mix volumes).
    raw4d = ndi.gaussian_filter(np.asanyarray(nib.load(str(p)).dataobj), 2.0)
    assert not np.array_equal(ref, raw4d)


def test_scaled_input_is_seen_as_nibabel_sees_it(tmp_path):
    p = save(tmp_path / "scaled.nii", noise((10, 9, 8), "int16", 3), slope_inter=(2.5, 10.0))
    data = np.asanyarray(nib.load(str(p)).dataobj)
    assert data.dtype == np.float64  # nibabel's view of scaled data
    nismooth("run", p, "-o", tmp_path / "o")
    o = tmp_path / "o" / p.name
    assert_exact(o, ndi.gaussian_filter(data, 2.0))
    hdr = nib.load(str(o)).header
    assert hdr.get_data_dtype() == np.float64
    assert hdr.get_slope_inter() in ((None, None), (1.0, 0.0))


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_big_endian_input(tmp_path, dtype):
    p = save(tmp_path / "be.nii.gz", noise((9, 8, 7), dtype, 4), endianness=">")
    assert nib.load(str(p)).header.endianness == ">"
    nismooth("run", p, "-o", tmp_path / "o")
    assert_exact(tmp_path / "o" / p.name, scipy_ref(p, 2.0))
    assert nib.load(str(tmp_path / "o" / p.name)).header.endianness == ">"


@pytest.mark.parametrize("choice,np_type", [("float32", np.float32), ("float64", np.float64)])
def test_dtype_option_matches_scipy_output_argument(tmp_path, choice, np_type):
    p = save(tmp_path / "i.nii.gz", noise((11, 7, 9), "int16", 5))
    nismooth("run", p, "-o", tmp_path / "o", "--dtype", choice, "--sigma", "1.5")
    assert_exact(tmp_path / "o" / p.name, scipy_ref(p, 1.5, output=np_type))


def test_weights_equal_scipys_for_many_sigmas(binary):
    for sigma in np.concatenate([np.arange(0.13, 8, 0.173), [0.5, 1, 2, 3, 10.25]]):
        radius = int(4.0 * float(sigma) + 0.5)
        ref = _gaussian_kernel1d(float(sigma), 0, radius)
        got = np.array([float(v) for v in nismooth("weights", "--sigma", repr(float(sigma))).stdout.split()])
        assert got.shape == ref.shape and np.array_equal(got, ref), f"sigma {sigma}"


def test_formats_levels_and_size_against_nibabel(tmp_path):
    g = tmp_path / "g"
    nismooth("generate", "-o", g, "-n", "1", "--shape", "96,96,64", "--seed", "8")
    src = next(g.iterdir())
    nismooth("run", src, "-o", tmp_path / "nii", "--format", "nii")
    plain = tmp_path / "nii" / src.name.replace(".nii.gz", ".nii")
    assert read_bytes(plain)[:2] != b"\x1f\x8b"
    assert_exact(plain, scipy_ref(src, 2.0))
    nismooth("run", src, "-o", tmp_path / "l6", "--compression-level", "6")
    assert_exact(tmp_path / "l6" / src.name, scipy_ref(src, 2.0))
    # Output size at the default level within 3% of what nibabel writes for the same array.
    nismooth("run", src, "-o", tmp_path / "gz")
    ours = (tmp_path / "gz" / src.name).stat().st_size
    theirs_path = tmp_path / "nib.nii.gz"
    img = nib.load(str(src))
    nib.save(nib.Nifti1Image(scipy_ref(src, 2.0), img.affine, img.header), str(theirs_path))
    assert ours <= 1.03 * theirs_path.stat().st_size, (ours, theirs_path.stat().st_size)


def one_member_payload(path):
    """The decompressed bytes of a gzip file that must hold exactly one member.

    zlib checks the CRC-32 and length in the trailer; any byte after the first
    member (a second member, as BGZF writes) is left in `unused_data`."""
    z = zlib.decompressobj(wbits=31)
    data = z.decompress(path.read_bytes()) + z.flush()
    assert z.eof, f"{path}: gzip stream does not end"
    assert z.unused_data == b"", f"{path}: more than one gzip member"
    return data


@pytest.mark.parametrize("endianness", ["<", ">"])
def test_parallel_gzip_is_one_member_spanning_many_chunks(tmp_path, endianness):
    # 3.4 MB of float32: four 1 MiB chunks compressed on separate threads.
    p = save(tmp_path / "big.nii.gz", noise((96, 96, 92), "float32", 11), endianness=endianness)
    for threads in ("1", "2"):
        out = tmp_path / f"o{threads}"
        nismooth("run", p, "-o", out, "--threads", threads)
        payload = one_member_payload(out / p.name)
        img = nib.load(str(out / p.name))
        assert len(payload) == img.dataobj.offset + img.get_fdata().size * 4
        assert_exact(out / p.name, scipy_ref(p, 2.0))
    # The same bytes whatever the number of threads.
    assert read_bytes(tmp_path / "o1" / p.name) == read_bytes(tmp_path / "o2" / p.name)


def test_corrupt_file_among_good_ones(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    good = [save(d / f"good{i}.nii.gz", noise((8, 7, 6), "float32", i)) for i in range(3)]
    whole = (d / "good0.nii.gz").read_bytes()
    (d / "bad_truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    (d / "bad_garbage.nii").write_bytes(b"not a nifti file at all" * 30)
    out = tmp_path / "out"
    proc = nismooth("run", d, "-o", out, "--report", tmp_path / "r.json", expect=1)
    assert "bad_truncated.nii.gz" in proc.stderr and "bad_garbage.nii" in proc.stderr
    for p in good:
        assert_exact(out / p.name, scipy_ref(p, 2.0))
    assert names(out) == sorted(p.name for p in good), "no partial or temp files"
    report = json.loads((tmp_path / "r.json").read_text())
    status = {r["input"].split("/")[-1]: (r["status"], r["error"]) for r in report["images"]}
    assert status["bad_truncated.nii.gz"][0] == "failed" and "gzip" in status["bad_truncated.nii.gz"][1]
    assert status["bad_garbage.nii"][0] == "failed" and "NIfTI" in status["bad_garbage.nii"][1]
    assert report["summary"]["failed"] == 2 and report["summary"]["ok"] == 3
