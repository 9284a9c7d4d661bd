"""The Python module (`pip install .`): nismooth.gaussian_filter against
scipy.ndimage.gaussian_filter and nismooth.smooth_img against nilearn's,
bit for bit."""
import itertools

import numpy as np
import pytest
from scipy import ndimage

nismooth = pytest.importorskip("nismooth", reason="pip install . builds the module (ci/test.sh does)")

DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
          np.float32, np.float64]
MODES = ["reflect", "nearest", "mirror", "constant", "wrap", "grid-wrap", "grid-mirror", "grid-constant"]


def data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 300 + 500).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -30000), min(info.max, 30000), size=shape,
                        endpoint=True).astype(dtype)


def same(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), (
        f"{np.count_nonzero(got != want)} values differ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_every_dtype_and_mode(dtype, mode):
    a = data((13, 11, 9), dtype, 1)
    for sigma in [1.5, (0.7, 2.0, 3.1)]:
        same(nismooth.gaussian_filter(a, sigma, mode=mode, cval=-7.5, threads=2),
             ndimage.gaussian_filter(a, sigma, mode=mode, cval=-7.5))


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_one_to_four_dimensions_in_any_memory_order(ndim, dtype):
    shape = (17, 12, 9, 5)[:ndim]
    a = data(shape, dtype, ndim)
    views = {"C": a, "F": np.asfortranarray(a), "negative strides": a[::-1],
             "every other": data(tuple(2 * s for s in shape), dtype, 9)[(slice(None, None, 2),) * ndim],
             "transposed": a.T}
    for name, v in views.items():
        same(nismooth.gaussian_filter(v, 2.0), ndimage.gaussian_filter(v, 2.0))


def test_truncate_radius_axes_and_output():
    a = data((20, 16, 12, 3), np.float32, 3)
    same(nismooth.gaussian_filter(a, 3.0, truncate=2.2), ndimage.gaussian_filter(a, 3.0, truncate=2.2))
    same(nismooth.gaussian_filter(a, 2.0, radius=3), ndimage.gaussian_filter(a, 2.0, radius=3))
    same(nismooth.gaussian_filter(a, (1.0, 2.0), radius=(2, 5), axes=(2, 0)),
         ndimage.gaussian_filter(a, (1.0, 2.0), radius=(2, 5), axes=(2, 0)))
    same(nismooth.gaussian_filter(a, 2.0, axes=(-1, 1)), ndimage.gaussian_filter(a, 2.0, axes=(-1, 1)))
    same(nismooth.gaussian_filter(a, 2.0, mode=["wrap", "reflect", "nearest", "mirror"]),
         ndimage.gaussian_filter(a, 2.0, mode=["wrap", "reflect", "nearest", "mirror"]))
    i = data((15, 14, 13), np.int16, 4)
    same(nismooth.gaussian_filter(i, 2.0, output=np.float64), ndimage.gaussian_filter(i, 2.0, output=np.float64))
    same(nismooth.gaussian_filter(i, 2.0, output="uint8"), ndimage.gaussian_filter(i, 2.0, output="uint8"))
    out, want = np.zeros(i.shape, np.float32), np.zeros(i.shape, np.float32)
    assert nismooth.gaussian_filter(i, 1.2, output=out) is out
    ndimage.gaussian_filter(i, 1.2, output=want)
    same(out, want)
    same(nismooth.gaussian_filter(i, 0.0), ndimage.gaussian_filter(i, 0.0))


def unaligned(like):
    """An array of `like`'s shape and dtype one byte off its type's alignment."""
    raw = np.empty(like.nbytes + 1, np.uint8)[1:]
    a = raw.view(like.dtype).reshape(like.shape)
    assert not a.flags.aligned or like.dtype.itemsize == 1
    a[...] = like
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_in_place_overlapping_and_unaligned_arrays(dtype):
    """The engine filters numpy's own memory: in place when output is input,
    and from a copy when the output overlaps the input in another layout or
    the input is not aligned; an unaligned output is written through a
    scratch array. Every case gives scipy's values for the input as it was."""
    x = data((17, 12, 10), dtype, 3)
    want = ndimage.gaussian_filter(x, 2)
    for order in "CF":
        a = np.array(x, order=order)
        assert nismooth.gaussian_filter(a, 2, output=a) is a
        same(a, want)
    base = np.zeros(x.size + 40, dtype)
    inp = base[:x.size].reshape(x.shape)
    inp[...] = x
    shifted = base[40:].reshape(x.shape)
    nismooth.gaussian_filter(inp, 2, output=shifted)
    same(shifted, want)
    same(nismooth.gaussian_filter(unaligned(x), 2), want)
    out = unaligned(np.zeros_like(x))
    nismooth.gaussian_filter(x, 2, output=out)
    same(out, want)
    wider = np.zeros(x.shape, np.float64)
    same(nismooth.gaussian_filter(x, 2, output=wider), ndimage.gaussian_filter(x, 2, output=np.float64))


def test_non_finite_values_and_byte_order():
    a = data((12, 10, 8), np.float32, 5)
    a[3, 4, 5], a[0, 0, 0], a[7, 7, 7] = np.nan, np.inf, -np.inf
    same(nismooth.gaussian_filter(a, 1.5), ndimage.gaussian_filter(a, 1.5))
    b = data((12, 10, 8), np.int16, 6).astype(">i2")
    same(nismooth.gaussian_filter(b, 1.5).astype("=i2"), ndimage.gaussian_filter(b, 1.5).astype("=i2"))


def test_orders_complex_and_what_scipy_refuses_are_scipys():
    a = data((9, 8, 7), np.float32, 7)
    for order in (1, 2, 3, [0, 1, 2], [3, 2, 1]):
        same(nismooth.gaussian_filter(a, [1.5, 0.8, 2.2], order=order, mode="wrap"),
             ndimage.gaussian_filter(a, [1.5, 0.8, 2.2], order=order, mode="wrap"))
    c = (a + 1j * a[::-1]).astype(np.complex64)
    same(nismooth.gaussian_filter(c, 1.5, order=1, cval=2 - 1j, mode="constant"),
         ndimage.gaussian_filter(c, 1.5, order=1, cval=2 - 1j, mode="constant"))
    for bad, kind, words in ((dict(order=-1), ValueError, "order must be non-negative"),
                             (dict(axes=(1.5,)), TypeError, "cannot be interpreted as an integer"),
                             (dict(axes=(3,)), ValueError, "out of range")):
        for f in (nismooth.gaussian_filter, ndimage.gaussian_filter):
            with pytest.raises(kind, match=words):
                f(a, 2.0, **bad)
    for f in (nismooth.gaussian_filter, ndimage.gaussian_filter):
        with pytest.raises(RuntimeError, match="not supported"):
            f(a.astype(np.float16), 2.0)
    with pytest.raises(RuntimeError, match="output shape"):
        nismooth.gaussian_filter(a, 2.0, output=np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="Radius"):
        nismooth.gaussian_filter(a, 2.0, radius=-1)


@pytest.mark.parametrize("shape", [(8, 8, 8), (0, 3)])
def test_a_read_only_output_is_refused_as_scipy_refuses_it(shape):
    # Also when there is nothing to write (zero size), as in scipy.
    a = data(shape, np.float32, 8)
    for f in (ndimage.gaussian_filter, nismooth.gaussian_filter):
        out = np.zeros(shape, np.float32)
        out.flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            f(a, 2.0, output=out)


def test_smooth_img_is_nilearns(tmp_path):
    nib = pytest.importorskip("nibabel")
    nilearn_image = pytest.importorskip("nilearn.image")
    aff = np.array([[1.7, 0.3, 0, 4], [-0.2, 2.1, 0.1, -3], [0, 0.2, 2.9, 1], [0, 0, 0, 1]])
    for dtype, shape in [(np.int16, (14, 12, 10)), (np.float32, (12, 10, 8, 3))]:
        d = data(shape, dtype, 8)
        path = tmp_path / f"{np.dtype(dtype).name}.nii.gz"
        nib.save(nib.Nifti1Image(d, aff), str(path))
        for fwhm in [6, (4, 0, 8)]:
            want = np.asanyarray(nilearn_image.smooth_img(str(path), fwhm).dataobj)
            got = np.asanyarray(nismooth.smooth_img(str(path), fwhm).dataobj)
            same(got, want)


def test_the_wheels_command_is_the_binary(tmp_path):
    """`nismooth` installed by pip runs the binary's command line in the
    module: no MPI in it, and the same output bytes as the binary's."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    from conftest import BIN

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name == "nismooth"}
    assert scripts == {"nismooth": "nismooth._cli:main"}
    cli = [sys.executable, "-m", "nismooth._cli"]
    version = subprocess.run([*cli, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.splitlines()[0].endswith("(features: cpu)"), version
    subprocess.run([str(BIN), "generate", "-o", str(tmp_path / "in"), "-n", "3", "--shape", "20,18,12",
                    "--dtype", "int16"], check=True, capture_output=True)
    subprocess.run([*cli, "run", str(tmp_path / "in"), "-o", str(tmp_path / "a"), "--sigma", "1.5"],
                   check=True, capture_output=True)
    subprocess.run([str(BIN), "run", str(tmp_path / "in"), "-o", str(tmp_path / "b"), "--sigma", "1.5"],
                   check=True, capture_output=True)
    names = sorted(p.name for p in (tmp_path / "b").glob("*.nii.gz"))
    assert len(names) == 3
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    bad = subprocess.run([*cli, "run", "--no-such-flag"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr


def test_the_wheels_command_counts_only_the_runs_cpu(tmp_path):
    """The wheel's command runs inside a Python interpreter: the CPU that
    Python spent starting is not the run's. What once inflated it was numpy,
    whose BLAS threads spun (0.89 against the binary's 0.65): the command
    never imports it, and its CPU efficiency is no more than 15 points above
    the binary's for the same run (median of 5, interleaved; a one-sided
    bound, since timings here drift by 10 points from run to run)."""
    import json
    import statistics
    import subprocess
    import sys

    from conftest import BIN

    imports = [line.split("|")[-1].strip() for line in subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nismooth._cli", "--version"],
        check=True, capture_output=True, text=True).stderr.splitlines() if line.startswith("import time:")]
    assert "nismooth._native" in imports and not [m for m in imports if m.split(".")[0] == "numpy"], imports
    subprocess.run([str(BIN), "generate", "-o", str(tmp_path / "in"), "-n", "6", "--shape", "64,64,40"],
                   check=True, capture_output=True)
    effs = {"wheel": [], "binary": []}
    for k in range(5):
        for who, cmd in (("wheel", [sys.executable, "-m", "nismooth._cli"]), ("binary", [str(BIN)])):
            report = tmp_path / f"{who}{k}.json"
            subprocess.run([*cmd, "run", str(tmp_path / "in"), "-o", str(tmp_path / f"{who}{k}"), "--no-sync",
                            "--progress", "none", "--report", str(report)], check=True, capture_output=True)
            effs[who].append(json.loads(report.read_text())["summary"]["cpu_efficiency"])
    wheel, binary = statistics.median(effs["wheel"]), statistics.median(effs["binary"])
    print(f"CPU efficiency: wheel {effs['wheel']}, binary {effs['binary']}")
    assert wheel - binary <= 0.15, effs


def test_smooth_img_without_nibabel_names_the_extra(monkeypatch):
    import sys

    import nismooth

    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"nismooth\[nilearn\]"):
        nismooth.smooth_img("any.nii.gz", 6)


def test_the_wheel_offers_the_extras_smooth_img_needs():
    from importlib.metadata import metadata

    assert {"nibabel", "nilearn"} <= set(metadata("nismooth").get_all("Provides-Extra") or [])


SIGMAS_OF_THEIR_OWN_DTYPE = [np.float32(1.5), np.float16(1.5), np.longdouble(1.5),
                             np.array([1.5, 2.5, 0.7], dtype=np.float32),
                             [np.float32(1.5), np.float32(2.1), np.float32(0.9)],
                             np.array(1.3, dtype=np.float32)]


@pytest.mark.parametrize("sigma", SIGMAS_OF_THEIR_OWN_DTYPE, ids=lambda s: f"{type(s).__name__}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_sigma_keeps_its_own_dtype_as_in_scipy(sigma, dtype):
    """scipy builds the kernel in σ's dtype (nibabel's get_zooms() gives float32)."""
    a = data((20, 17, 15), dtype, 11)
    same(nismooth.gaussian_filter(a, sigma), ndimage.gaussian_filter(a, sigma))
    same(nismooth.gaussian_filter(a, sigma, mode="wrap", truncate=np.float32(3.3)),
         ndimage.gaussian_filter(a, sigma, mode="wrap", truncate=np.float32(3.3)))
    b = data((9, 8, 7, 3), dtype, 12)
    s4 = list(np.broadcast_to(np.asarray(sigma), (3,))) + [np.float32(0.8)]
    same(nismooth.gaussian_filter(b, s4), ndimage.gaussian_filter(b, s4))


BAD_KERNELS = [dict(sigma=np.inf), dict(sigma=1e300), dict(sigma=2, truncate=-1),
               dict(sigma=2, truncate=-4), dict(sigma=2, truncate=np.inf),
               dict(sigma=2, truncate=np.nan), dict(sigma=2, radius=2 ** 63),
               dict(sigma=np.float32(np.inf)), dict(sigma=2, radius=-3)]


def _raised(f):
    try:
        f()
    except BaseException as e:  # noqa: B036 (a PanicException is a BaseException)
        return type(e)
    return None


@pytest.mark.parametrize("kw", BAD_KERNELS, ids=repr)
def test_bad_kernels_raise_what_scipy_raises(kw):
    a = data((6, 5, 4), np.float32, 13)
    want = _raised(lambda: ndimage.gaussian_filter(a, **kw))
    assert want is not None and issubclass(want, Exception)
    assert _raised(lambda: nismooth.gaussian_filter(a, **kw)) is want


def test_kernels_too_large_for_memory_raise_memory_error_not_abort():
    """scipy would try (and raise MemoryError); an allocation failing in Rust
    aborts the interpreter, so each case runs in a child process."""
    import subprocess
    import sys
    cases = ["nismooth.gaussian_filter(a, 1e9)", "nismooth.gaussian_filter(a, 2, truncate=1e9)",
             "nismooth.gaussian_filter(a, 2, radius=10**12)"]
    for case in cases:
        code = ("import numpy as np, nismooth\na = np.ones((5, 5, 5), np.float32)\n"
                f"try:\n    {case}\nexcept MemoryError:\n    print('MemoryError')\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == "MemoryError", (case, proc.returncode,
                                                                              proc.stderr[-500:])


def test_smooth_img_with_an_infinite_fwhm_raises_as_nilearn(tmp_path):
    nib = pytest.importorskip("nibabel")
    nilearn_image = pytest.importorskip("nilearn.image")
    img = nib.Nifti1Image(data((6, 5, 4), np.float32, 14), np.eye(4))
    want = _raised(lambda: nilearn_image.smooth_img(img, np.inf))
    assert want is not None and issubclass(want, Exception)
    assert _raised(lambda: nismooth.smooth_img(img, np.inf)) is want


def test_more_threads_than_cpus_are_capped_with_a_warning():
    import os
    a = data((40, 40, 40), np.float32, 15)
    cpus = len(os.sched_getaffinity(0))
    with pytest.warns(RuntimeWarning, match=f"{cpus} used"):
        got = nismooth.gaussian_filter(a, 2.0, threads=100000)
    same(got, ndimage.gaussian_filter(a, 2.0))


@pytest.mark.parametrize("fwhm", [1e-160, 1e-20, 1e-300])
def test_smooth_img_with_a_tiny_fwhm_is_nilearns(fwhm):
    """nilearn's gaussian_filter1d keeps a σ ≤ 1e-15 (NaN once σ² underflows)."""
    nib = pytest.importorskip("nibabel")
    nilearn_image = pytest.importorskip("nilearn.image")
    img = nib.Nifti1Image(data((6, 5, 4), np.float32, 16), np.eye(4))
    with np.errstate(all="ignore"):
        want = np.asanyarray(nilearn_image.smooth_img(img, fwhm).dataobj)
    got = np.asanyarray(nismooth.smooth_img(img, fwhm).dataobj)
    assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True)


def _headered_images(tmp_path):
    """Images whose headers nilearn copies: a uint8 with a description,
    sform code 4, a display range and units; a scaled int16; a float64 with
    NaN; a 4-D float32; a pair; a NIfTI-2."""
    nib = pytest.importorskip("nibabel")
    aff = np.diag([2.0, 2.5, 3.0, 1.0])
    aff[:3, 3] = [-10, 5, 7]
    out = []
    for name, dtype, shape, klass in [("u8", np.uint8, (12, 13, 9), nib.Nifti1Image),
                                      ("i16", np.int16, (10, 9, 8), nib.Nifti1Image),
                                      ("f64", np.float64, (9, 10, 7), nib.Nifti1Image),
                                      ("f32", np.float32, (8, 9, 7, 3), nib.Nifti1Image),
                                      ("pair", np.float32, (8, 8, 8), nib.Nifti1Pair),
                                      ("ni2", np.int16, (8, 9, 10), nib.Nifti2Image)]:
        d = data(shape, dtype, len(out))
        if dtype == np.float64:
            d[0, 0, 0] = np.nan
        img = klass(d, aff)
        img.header["descrip"] = b"a description"
        img.set_sform(aff, 4)
        img.header.set_xyzt_units("mm", "sec")
        img.header["cal_max"] = 77
        if name == "i16":
            img.header.set_slope_inter(2.0, 1.0)
        ext = ".img" if klass is nib.Nifti1Pair else ".nii.gz"
        nib.save(img, str(tmp_path / f"{name}{ext}"))
        out.append(nib.load(str(tmp_path / f"{name}{ext}")))
    return out


def _same_image(got, want):
    assert type(got) is type(want)
    same(np.asanyarray(got.dataobj), np.asanyarray(want.dataobj))
    assert np.array_equal(got.affine, want.affine)
    assert got.header.binaryblock == want.header.binaryblock


@pytest.mark.parametrize("nilearn_installed", [True, False])
def test_smooth_img_returns_the_image_nilearn_makes_header_and_all(tmp_path, monkeypatch, nilearn_installed):
    """nilearn 0.14 copies the input's header (scaling reset, cal_min and
    cal_max the data's range) and keeps the input's class (a pair becomes a
    Nifti1Image); without nilearn installed, nismooth's own copy of those
    rules makes the same image. Saved and loaded, the files are the same."""
    import sys

    nilearn_image = pytest.importorskip("nilearn.image")
    nib = pytest.importorskip("nibabel")
    imgs = _headered_images(tmp_path)
    wants = [nilearn_image.smooth_img(img, 5) for img in imgs]
    if not nilearn_installed:
        monkeypatch.setitem(sys.modules, "nilearn", None)
        monkeypatch.setitem(sys.modules, "nilearn.image", None)
    for n, (img, want) in enumerate(zip(imgs, wants)):
        got = nismooth.smooth_img(img, 5)
        _same_image(got, want)
        nib.save(got, str(tmp_path / f"ours{n}.nii"))
        nib.save(want, str(tmp_path / f"theirs{n}.nii"))
        assert (tmp_path / f"ours{n}.nii").read_bytes() == (tmp_path / f"theirs{n}.nii").read_bytes()


def test_smooth_img_takes_what_nilearn_takes(tmp_path):
    """Lists, tuples and generators of images or paths (a list back),
    pathlib paths, fwhm None, 0 (nilearn's warning), 'fast', per-axis
    sequences and arrays."""
    import warnings
    from pathlib import Path

    nilearn_image = pytest.importorskip("nilearn.image")
    imgs = _headered_images(tmp_path)[:3]
    paths = [str(tmp_path / "u8.nii.gz"), Path(tmp_path / "i16.nii.gz")]
    for given in (imgs, tuple(imgs), paths):
        got, want = nismooth.smooth_img(given, 4), nilearn_image.smooth_img(given, 4)
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            _same_image(g, w)
    got = nismooth.smooth_img(iter(imgs), 4)
    assert isinstance(got, list) and len(got) == 3
    for fwhm in (None, "fast", [3, 0, 6], np.array([2.0, 4.0, 1.0]), np.float32(3.5), (None, 3, 3)):
        _same_image(nismooth.smooth_img(Path(paths[1]), fwhm), nilearn_image.smooth_img(paths[1], fwhm))
    for fwhm in (0, 0.0):
        with pytest.warns(UserWarning, match="Setting it to None"):
            got = nismooth.smooth_img(imgs[0], fwhm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _same_image(got, nilearn_image.smooth_img(imgs[0], fwhm))
    with pytest.raises(TypeError):
        nismooth.smooth_img(42, 4)


def test_surface_images_go_to_nilearn_or_are_refused_by_name(monkeypatch):
    import sys

    nilearn_image = pytest.importorskip("nilearn.image")
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    coords = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 4]])
    mesh = PolyMesh(left=InMemoryMesh(coords, faces), right=InMemoryMesh(coords, faces))
    rng = np.random.default_rng(3)
    surf = SurfaceImage(mesh=mesh, data={"left": rng.random(5), "right": rng.random(5)})
    for given in (surf, [surf, surf]):
        got, want = nismooth.smooth_img(given, 5), nilearn_image.smooth_img(given, 5)
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            for part in ("left", "right"):
                same(np.asarray(g.data.parts[part]), np.asarray(w.data.parts[part]))
    with pytest.raises(TypeError, match="must be a scalar"):
        nismooth.smooth_img(surf, [1, 2, 3])
    # Without nilearn, nobody here smooths along a mesh: a TypeError names the type.
    monkeypatch.setitem(sys.modules, "nilearn", None)
    monkeypatch.setitem(sys.modules, "nilearn.image", None)
    with pytest.raises(TypeError, match="SurfaceImage.*nilearn"):
        nismooth.smooth_img(surf, 5)


FAMILY = [
    (ndimage.gaussian_filter1d, "gaussian_filter1d", [dict(sigma=1.5), dict(sigma=2.0, axis=0, order=1, mode="wrap"),
                                                      dict(sigma=np.float64(0.0)), dict(sigma=np.float32(1.3), order=3, radius=4),
                                                      dict(sigma=1.2, axis=-2, order=2, mode="constant", cval=3.0)]),
    (ndimage.gaussian_laplace, "gaussian_laplace", [dict(sigma=1.5), dict(sigma=[1.0, 0.0, 2.0], mode="nearest"),
                                                    dict(sigma=1.2, axes=(0, 2), mode=["wrap", "mirror"]),
                                                    dict(sigma=1.0, output=np.float64, truncate=2.5)]),
    (ndimage.gaussian_gradient_magnitude, "gaussian_gradient_magnitude",
     [dict(sigma=1.5), dict(sigma=[1.0, 0.5, 2.0], mode="reflect", radius=3),
      dict(sigma=1.2, axes=(1,)), dict(sigma=1.0, output=np.float32, cval=1.0, mode="constant")]),
]


@pytest.mark.parametrize("ref,name,cases", FAMILY, ids=[f[1] for f in FAMILY])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.complex64])
def test_the_family_is_scipys(ref, name, cases, dtype):
    """gaussian_filter1d, gaussian_laplace, gaussian_gradient_magnitude:
    scipy's results and dtypes, bit for bit (complex: its parts apart)."""
    import warnings

    a = data((11, 9, 8), np.float32 if dtype == np.complex64 else dtype, 9)
    if dtype == np.complex64:
        a = (a + 1j * a[::-1]).astype(np.complex64)
    for kw in cases:
        if dtype == np.complex64 and "output" in kw:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            same(getattr(nismooth, name)(a, **kw), ref(a, **kw))
    for bad in (dict(sigma=1.0, mode="sideways"), dict(sigma=[1.0, 2.0])):
        errors = []
        for f in (ref, getattr(nismooth, name)):
            with pytest.raises(Exception) as e:
                f(a, **bad)
            errors.append(e.type)
        assert errors[0] is errors[1], (name, bad, errors)


def test_what_the_eleventh_hostile_round_found_is_scipys_and_nilearns():
    """A Fraction σ (scipy squares it exactly, then rounds once), a Decimal
    (TypeError in scipy's arithmetic), bool input and output (scipy casts
    each pass's double to an unsigned char), a negative truncate that still
    gives radius 0, a real output dtype for complex input in the 1-D filter
    (promoted, with scipy's warning); smooth_img's NaN from a vanishing σ
    (nilearn's sign bit), an empty list, a 2-D image (AxisError)."""
    import warnings
    from decimal import Decimal
    from fractions import Fraction

    x = np.random.default_rng(0).random((20, 21, 22))
    b = x > 0.5
    for f in ("gaussian_filter", "gaussian_filter1d"):
        ref, ours = getattr(ndimage, f), getattr(nismooth, f)
        same(ours(x, Fraction(7, 3)), ref(x, Fraction(7, 3)))
        for bad in (Decimal("1.3"),):
            with pytest.raises(TypeError):
                ours(x, bad)
        for kw in ({}, dict(output=np.float32), dict(mode="constant", cval=1), dict(order=1)):
            same(ours(b, 1.0, **kw), ref(b, 1.0, **kw))
        same(ours(x * 3 - 1, 0.7, output=bool), ref(x * 3 - 1, 0.7, output=bool))
        same(ours(x, 1.3, truncate=-1), ref(x, 1.3, truncate=-1))
    same(nismooth.gaussian_laplace(b, 1.0), ndimage.gaussian_laplace(b, 1.0))
    with pytest.warns(UserWarning, match="promoting"):
        got = nismooth.gaussian_filter1d(x + 1j * x, 1.3, output=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(got, ndimage.gaussian_filter1d(x + 1j * x, 1.3, output=np.float32))

    nib = pytest.importorskip("nibabel")
    nilearn_image = pytest.importorskip("nilearn.image")
    img = nib.Nifti1Image(x.astype(np.float32), np.eye(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(np.asarray(nismooth.smooth_img(img, 1e-300).dataobj),
             np.asarray(nilearn_image.smooth_img(img, 1e-300).dataobj))
    # Round twelve: scipy makes the 1-D kernel before it reads the array (a
    # σ of 0 divides by zero first), and converts cval as a real number.
    with pytest.raises(ZeroDivisionError):
        nismooth.gaussian_filter1d(np.zeros(5, np.float16), 0)
    for cval in ("2", b"1"):
        with pytest.raises(TypeError):
            nismooth.gaussian_filter(x, 1.0, mode="constant", cval=cval)
    assert nismooth.smooth_img([], 5) == []
    with pytest.raises(TypeError, match="must be a scalar"):
        nismooth.smooth_img([], "fast")
    with pytest.raises(np.exceptions.AxisError):
        nismooth.smooth_img(nib.Nifti1Image(x[:, :, 0].astype(np.float32), np.eye(4)), 6)
