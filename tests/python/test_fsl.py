"""`--compat fsl` against a NumPy implementation of `fslmaths -s` (FSL 6),
written here from its description:

σ in mm; per axis a kernel of half-width ceil(4σ / pixdim) voxels with
unnormalised weights exp(-x²·pixdim² / (2σ²)); three 1-D passes x, y, z in
single precision; each output voxel divided by the sum of the weights that
fell inside the image (skipped if that sum is ≤ 1e-12); output float32 unless
--dtype asks otherwise, and then rounded (half away from zero) and clamped.
"""
import nibabel as nib
import numpy as np
import pytest

from conftest import nismooth, noise, save


def fsl_smooth(data, sigma_mm, pixdim, dtype=np.float32):
    x = np.asarray(data).astype(np.float32)
    for axis in range(3):
        p, n = abs(float(pixdim[axis])), x.shape[axis]
        if sigma_mm <= 0 or n == 1:
            continue
        r = int(np.ceil(4 * sigma_mm / p))
        k = np.arange(-r, r + 1)
        w = np.exp(-(k**2 * p**2) / (2 * sigma_mm**2)).astype(np.float32)
        src = np.moveaxis(x, axis, 0)
        out = np.empty_like(src)
        for i in range(n):
            acc = np.zeros(src.shape[1:], np.float32)
            total = np.float32(0)
            for kk in range(-r, r + 1):
                j = i + kk
                if 0 <= j < n:
                    acc = acc + w[kk + r] * src[j]
                    total = np.float32(total + w[kk + r])
            out[i] = acc / total if total > 1e-12 else acc
        x = np.moveaxis(out, 0, axis)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return x.astype(dtype)
    xd = x.astype(np.float64)
    info = np.iinfo(dtype)
    rounded = np.trunc(xd + np.copysign(0.5, xd))
    return np.clip(np.where(np.isnan(xd), 0, rounded), info.min, info.max).astype(dtype)


def smooth_volumes(data, sigma, pixdim, dtype=np.float32):
    if data.ndim == 4:
        return np.stack([fsl_smooth(data[..., t], sigma, pixdim, dtype) for t in range(data.shape[3])], axis=-1)
    return fsl_smooth(data, sigma, pixdim, dtype)


def check(tmp_path, data, pixdim, sigma, dtype_flag=None, expect_dtype=np.float32, ext=".nii.gz"):
    (tmp_path / "in").mkdir(exist_ok=True)
    src = save(tmp_path / "in" / f"img{ext}", data, affine=np.diag([*pixdim, 1.0]))
    out = tmp_path / f"out_{sigma}_{dtype_flag}"
    args = ["run", src, "-o", out, "--compat", "fsl", "--sigma", sigma]
    if dtype_flag:
        args += ["--dtype", dtype_flag]
    nismooth(*args)
    got = np.asanyarray(nib.load(str(out / src.name)).dataobj)
    ref = smooth_volumes(np.asanyarray(nib.load(str(src)).dataobj), float(sigma), pixdim, expect_dtype)
    assert got.dtype.newbyteorder("=") == np.dtype(expect_dtype)
    assert np.array_equal(got, ref), f"max |diff| {np.abs(got.astype(float) - ref.astype(float)).max()}"
    return got


@pytest.mark.parametrize("sigma", ["1", "2.5"])
def test_float32_anisotropic_voxels_bit_exact(tmp_path, sigma):
    check(tmp_path, noise((21, 18, 12), "float32", 1), (1.5, 2.0, 3.0), sigma)


def test_integers_give_float_by_default_and_rounded_integers_on_request(tmp_path):
    data = noise((17, 15, 9), "int16", 2)
    check(tmp_path, data, (1.0, 1.0, 2.0), "2")
    got = check(tmp_path, data, (1.0, 1.0, 2.0), "2", dtype_flag="input", expect_dtype=np.int16)
    assert not np.array_equal(got, smooth_volumes(data, 2.0, (1, 1, 2), np.float32).astype(np.int16)), \
        "rounded, not truncated"


def test_uint8_clamps_and_4d_goes_volume_by_volume(tmp_path):
    data = noise((12, 11, 7, 3), "uint8", 3)
    check(tmp_path, data, (2.0, 2.0, 2.0), "3", dtype_flag="input", expect_dtype=np.uint8, ext=".nii")


def test_edges_are_renormalised_not_padded(tmp_path):
    """A constant image stays constant to its edges: no boundary mode darkens them."""
    got = check(tmp_path, np.full((10, 9, 8), 100.0, np.float32), (1.0, 1.0, 1.0), "2")
    assert np.allclose(got, 100.0, rtol=1e-5)


def test_scipy_options_are_refused_with_fsl(tmp_path):
    (tmp_path / "in").mkdir()
    src = save(tmp_path / "in" / "a.nii", noise((5, 5, 5), "float32", 1))
    for extra in (["--mode", "wrap"], ["--truncate", "3"], ["--units", "mm"]):
        proc = nismooth("run", src, "-o", tmp_path / "out", "--compat", "fsl", *extra, expect=2)
        assert "--compat fsl" in proc.stderr
