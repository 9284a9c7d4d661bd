"""--compat nilearn --fwhm against nilearn.image.smooth_img itself, bit for
bit (the data array and its dtype), and --fwhm's σ under scipy's semantics."""
import numpy as np
import nibabel as nib
import pytest
from scipy import ndimage

from conftest import nismooth, noise

nilearn_image = pytest.importorskip("nilearn.image")


def oblique(deg_x, deg_z, zooms):
    """An affine rotated about x and z, with voxel sizes `zooms`."""
    a, b = np.deg2rad(deg_x), np.deg2rad(deg_z)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rx @ rz @ np.diag(zooms)
    aff[:3, 3] = [-40.0, 12.5, -30.0]
    return aff


def write(path, data, affine, sform=1, qform=1, klass=nib.Nifti1Image):
    img = klass(data, affine)
    img.set_qform(affine, code=qform)
    img.set_sform(affine, code=sform)
    nib.save(img, str(path))
    return path


def cases(tmp):
    """(name, path) of every kind of image smooth_img meets."""
    out = []

    def add(name, data, affine, **kw):
        out.append((name, write(tmp / f"{name}.nii.gz", data, affine, **kw)))

    add("int16_3d_oblique", noise((23, 19, 17), np.int16, 1), oblique(7, 11, (1.5, 2.0, 2.5)))
    f32 = noise((20, 18, 14, 4), np.float32, 2)
    f32[3, 4, 5, 1] = np.nan
    f32[0, 0, 0, 0] = np.inf
    f32[5, 5, 5, 3] = -np.inf
    add("float32_4d_nan_inf", f32, oblique(0, 20, (3.0, 3.0, 3.3)))
    add("uint8_3d", noise((16, 16, 12), np.uint8, 3), np.diag([2.0, 2.0, 2.0, 1.0]))
    big = noise((12, 11, 10), np.int32, 4) * 4099  # beyond 2^24: float32 rounds
    add("int32_3d_large", big.astype(np.int32), oblique(3, 5, (1.0, 1.2, 1.4)))
    add("float64_3d", noise((15, 14, 13), np.float64, 5), oblique(30, 0, (0.9, 1.1, 1.3)))
    # nibabel's affine from the quaternion (computed in long double).
    add("qform_only_oblique", noise((17, 15, 13), np.int16, 6),
        oblique(57.326551858930884, 24.280804238748328, (0.56, 3.35, 3.69)), sform=0, qform=1)
    add("no_transform", noise((14, 12, 10), np.float32, 7), np.diag([2.5, 1.5, 3.5, 1.0]),
        sform=0, qform=0)
    add("nifti2_oblique", noise((13, 12, 11), np.float32, 8), oblique(17, 4, (2.0, 2.2, 1.8)),
        klass=nib.Nifti2Image)
    return out


@pytest.mark.parametrize("fwhm", ["6", "4,0,8", "2.5"])
def test_compat_nilearn_is_smooth_img_bit_for_bit(tmp_path, fwhm):
    src = tmp_path / "in"
    src.mkdir()
    made = cases(src)
    out = tmp_path / "out"
    nismooth("run", src, "-o", out, "--compat", "nilearn", "--fwhm", fwhm, "--threads", "2")
    arg = [float(v) for v in fwhm.split(",")]
    arg = arg[0] if len(arg) == 1 else arg
    for name, path in made:
        want = nilearn_image.smooth_img(str(path), arg)
        got = nib.load(str(out / path.name))
        w, g = np.asanyarray(want.dataobj), np.asanyarray(got.dataobj)
        assert g.dtype == w.dtype, name
        assert g.shape == w.shape, name
        assert np.ascontiguousarray(g).tobytes() == np.ascontiguousarray(w).tobytes(), (
            f"{name}: {np.count_nonzero(g != w)} voxels differ, max {np.nanmax(np.abs(g - w))}")
        assert np.array_equal(got.affine, want.affine), name


def test_qform_voxel_sizes_differ_from_pixdim_and_still_match(tmp_path):
    """The qform case is only a test if nibabel's voxel sizes are not pixdim."""
    src = tmp_path / "in"
    src.mkdir()
    path = dict(cases(src))["qform_only_oblique"]
    img = nib.load(str(path))
    sizes = np.sqrt(np.sum(img.affine[:3, :3] ** 2, axis=0))
    pixdim = img.header["pixdim"][1:4].astype(np.float64)
    assert not np.array_equal(sizes, pixdim)


def test_many_qforms_match(tmp_path):
    """In about half of random oblique qforms nibabel's voxel sizes are not
    pixdim, and in a quarter a float64 computation of them would not be
    nibabel's (long double). On float64 data an ulp of σ shows: of these 60
    tiny images, 23 differ from smooth_img if σ comes from pixdim and 28 if
    the qform is computed in float64 (scipy, measured when this was written)."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    for k in range(60):
        ax, az = rng.uniform(0, 90, 2)
        zooms = rng.uniform(0.5, 4, 3).round(2)
        write(src / f"q{k:02d}.nii", noise((9, 8, 7), np.float64, k), oblique(ax, az, zooms),
              sform=0, qform=1)
    out = tmp_path / "out"
    nismooth("run", src, "-o", out, "--compat", "nilearn", "--fwhm", "5")
    for path in sorted(src.iterdir()):
        want = np.asanyarray(nilearn_image.smooth_img(str(path), 5).dataobj)
        got = np.asanyarray(nib.load(str(out / path.name)).dataobj)
        assert got.tobytes() == want.tobytes(), path.name


def test_fwhm_under_scipy_semantics_is_sigma_in_mm(tmp_path):
    data = noise((20, 16, 12), np.float32, 9)
    path = write(tmp_path / "a.nii.gz", data, np.diag([2.0, 1.5, 3.0, 1.0]))
    nismooth("run", path, "-o", tmp_path / "out", "--fwhm", "6")
    ratio = np.sqrt(8 * np.log(2))
    sigma = [6 / (ratio * z) for z in (2.0, 1.5, 3.0)]
    want = ndimage.gaussian_filter(data, sigma)
    got = np.asanyarray(nib.load(str(tmp_path / "out" / "a.nii.gz")).dataobj)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("extra,word", [
    ([], "--fwhm"),
    (["--fwhm", "6", "--mode", "nearest"], "--mode"),
    (["--fwhm", "6", "--dtype", "float64"], "--dtype"),
])
def test_compat_nilearn_refuses_what_smooth_img_cannot_say(tmp_path, extra, word):
    path = write(tmp_path / "a.nii.gz", noise((8, 8, 8), np.int16, 1), np.eye(4))
    proc = nismooth("run", path, "-o", tmp_path / "out", "--compat", "nilearn", *extra, expect=2)
    assert word in proc.stderr
    assert not (tmp_path / "out").exists()


def test_fwhm_and_sigma_exclude_each_other(tmp_path):
    path = write(tmp_path / "a.nii.gz", noise((8, 8, 8), np.int16, 1), np.eye(4))
    proc = nismooth("run", path, "-o", tmp_path / "out", "--fwhm", "6", "--sigma", "2", expect=2)
    assert "--sigma" in proc.stderr


def test_a_2d_image_fails_as_its_image_since_nilearn_has_no_answer(tmp_path):
    flat = write(tmp_path / "flat.nii.gz", noise((9, 8), np.float32, 3), np.eye(4))
    vol = write(tmp_path / "vol.nii.gz", noise((9, 8, 7), np.float32, 4), np.eye(4))
    proc = nismooth("run", flat, vol, "-o", tmp_path / "out", "--compat", "nilearn", "--fwhm", "6",
                    expect=1)
    assert "flat.nii.gz" in proc.stderr and "2-D image" in proc.stderr
    assert (tmp_path / "out" / "vol.nii.gz").exists()
    assert not (tmp_path / "out" / "flat.nii.gz").exists()


def test_the_files_header_beside_the_one_nilearn_saves(tmp_path):
    """`--compat nilearn` keeps the input's header; nilearn's saved file
    differs from it in cal_min/cal_max (nilearn sets the data's range, which
    it knows only once the whole output is made: nismooth writes the header
    first) and, for integer input, in the stored type: nilearn's header copy
    keeps the input's integer type, so its file holds the smoothed values
    rounded to it, where nismooth stores them exactly as float32. Nothing
    else differs, and float data is equal to the bit."""
    from nilearn.image import smooth_img

    aff = np.diag([2.0, 2.5, 3.0, 1.0])
    aff[:3, 3] = [-10, 5, 7]
    (tmp_path / "in").mkdir()
    for name, dtype in [("u8", np.uint8), ("i16", np.int16), ("f32", np.float32), ("f64", np.float64)]:
        d = noise((12, 13, 9), np.float32, 3).clip(0, 200).astype(dtype)
        img = nib.Nifti1Image(d, aff)
        img.header["descrip"] = b"a description"
        img.set_sform(aff, 4)
        img.header.set_xyzt_units("mm", "sec")
        img.header["cal_max"] = 77
        nib.save(img, str(tmp_path / "in" / f"{name}.nii.gz"))
        nib.save(smooth_img(str(tmp_path / "in" / f"{name}.nii.gz"), 6), str(tmp_path / f"nilearn_{name}.nii.gz"))
    nismooth("run", tmp_path / "in", "-o", tmp_path / "out", "--fwhm", "6", "--compat", "nilearn", "-q")
    for name in ("u8", "i16", "f32", "f64"):
        ours = nib.load(str(tmp_path / "out" / f"{name}.nii.gz"))
        theirs = nib.load(str(tmp_path / f"nilearn_{name}.nii.gz"))
        differ = {k for k in ours.header if ours.header[k].tobytes() != theirs.header[k].tobytes()}
        integer = name in ("u8", "i16")
        expected = {"cal_min", "cal_max"} | ({"datatype", "bitpix"} if integer else set())
        assert differ == expected, (name, differ)
        assert ours.header["cal_max"] == 77
        ours_data, theirs_data = np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj)
        if integer:
            assert ours.get_data_dtype() == np.float32
            assert theirs.get_data_dtype() == {"u8": np.uint8, "i16": np.int16}[name]
            assert np.abs(ours_data - theirs_data).max() <= 1.0
        else:
            assert ours_data.tobytes() == theirs_data.tobytes()
