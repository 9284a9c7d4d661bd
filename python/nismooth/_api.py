"""The Python API's implementation (``nismooth`` exposes it): numpy is
imported here, not by ``import nismooth``, so that the ``nismooth`` command
(``_cli``) runs without numpy and its BLAS threads in its process."""
import numbers
import operator
import os

import numpy as np

from . import _native


_MODES = {"reflect": "reflect", "grid-mirror": "reflect", "nearest": "nearest",
          "mirror": "mirror", "constant": "constant", "grid-constant": "constant",
          "wrap": "wrap", "grid-wrap": "wrap"}
_DTYPES = {np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                                 np.uint64, np.int64, np.float32, np.float64)}


def _per_axis(value, n, name):
    """scipy's _normalize_sequence: one value for every axis, or one per axis
    (each keeping its own type: a numpy float32 σ makes another kernel)."""
    if isinstance(value, str) or not np.iterable(value):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise RuntimeError("sequence argument must have length equal to input rank")
    return value


def _axes(axes, ndim):
    """scipy's _check_axes: a TypeError for an axis that is no integer, a
    ValueError with scipy's words for one out of range or repeated."""
    if axes is None:
        return list(range(ndim))
    if np.isscalar(axes):
        axes = (axes,)
    elif not np.iterable(axes):
        raise ValueError("axes must be an integer, iterable of integers, or None")
    out = []
    for ax in axes:
        ax = operator.index(ax)
        if ax < -ndim or ax > ndim - 1:
            raise ValueError(f"specified axis: {ax} is out of range")
        out.append(ax % ndim)
    if len(set(out)) != len(out):
        raise ValueError("axes must be unique")
    return out


def _output(output, input):
    """scipy's _get_output: a new array of the input's dtype, of a dtype asked, or the one given."""
    # Values as scipy's; the memory order follows the input's (scipy's is
    # always C), which spares a transposing copy of a Fortran-ordered image.
    order = "F" if input.flags.f_contiguous and not input.flags.c_contiguous else "C"
    if output is None:
        return np.empty(input.shape, dtype=input.dtype.name, order=order)
    if isinstance(output, str) and not issubclass(np.dtype(output).type, np.number):
        raise RuntimeError("output must have numeric dtype")
    if isinstance(output, (type, np.dtype, str)):
        return np.empty(input.shape, dtype=np.dtype(output), order=order)
    if output.shape != input.shape:
        raise RuntimeError("output shape not correct")
    return output


def _radius(sigma, truncate, radius):
    """scipy's gaussian_filter1d: the radius int(truncate·float(σ) + 0.5), or
    `radius`, computed with the caller's own objects, so that a NaN, an
    infinity or a negative value raises what scipy raises."""
    sd = float(sigma)
    lw = int(truncate * sd + 0.5)
    if radius is not None:
        lw = radius
    if not isinstance(lw, numbers.Integral) or lw < 0:
        raise ValueError("Radius must be a nonnegative integer.")
    return int(lw)


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_kernel_memory(lw, length, threads):
    """A kernel this machine cannot hold is refused as numpy refuses an
    array, before anything is allocated: its weights and every thread's
    line padded by the radius on each side."""
    if 2 * lw + 1 > np.iinfo(np.intp).max:
        # scipy's np.arange(-lw, lw + 1) says this of a length beyond intp.
        raise ValueError("Maximum allowed size exceeded")
    need = 8 * ((2 * lw + 1) + (threads + 1) * (length + 2 * lw))
    if need > _available_bytes():
        raise MemoryError(f"Unable to allocate {need} bytes for a Gaussian kernel of radius {lw}")


def _numpy_kernel(sigma, order, radius):
    """scipy's _gaussian_kernel1d(sigma, order, radius), the same numpy
    operations in σ's own dtype (a float32 σ rounds -0.5/σ² to float32; a
    longdouble σ keeps every step in long double): the derivative of order
    `order` is q(x)·φ(x), q's coefficients found by applying
    q ↦ q' + q·p' (p' = -x/σ²) `order` times."""
    if order < 0:
        raise ValueError("order must be non-negative")
    exponent_range = np.arange(order + 1)
    sigma2 = sigma * sigma
    x = np.arange(-radius, radius + 1)
    phi_x = np.exp(-0.5 / sigma2 * x ** 2)
    phi_x = phi_x / phi_x.sum()
    if order == 0:
        return phi_x
    q = np.zeros(order + 1)
    q[0] = 1
    D = np.diag(exponent_range[1:], 1)
    P = np.diag(np.ones(order) / -sigma2, -1)
    Q_deriv = D + P
    for _ in range(order):
        q = Q_deriv.dot(q)
    q = (x[:, None] ** exponent_range).dot(q)
    return q * phi_x


def _half_kernel(sigma, order, lw):
    """The kernel's weights from the centre out, and whether scipy sums it
    as antisymmetric. scipy correlates with the reversed kernel and decides
    its symmetry as its C code does (within DBL_EPSILON, NaN counting as
    equal); either way it reads the reversed kernel's left half, the
    kernel's right half."""
    with np.errstate(all="ignore"):
        k = np.asarray(_numpy_kernel(sigma, order, lw), dtype=np.float64)
        fw = k[::-1]
        left, right = fw[lw - 1::-1] if lw else fw[:0], fw[lw + 1:]
        eps = np.finfo(np.float64).eps
        symmetric = not np.any(np.abs(right - left) > eps)
        odd = not symmetric and not np.any(np.abs(right + left) > eps)
    if not symmetric and not odd:
        raise NotImplementedError(f"a Gaussian kernel of order {order} that is neither symmetric nor antisymmetric")
    return [float(w) for w in k[lw:]], odd


def _own_float(sigma):
    """Whether scipy's kernel for σ may differ from the float64 one the
    native side makes: any σ but a Python or numpy float64 or integer (a
    float32 σ rounds in float32; a Fraction squares exactly, then rounds
    once; a Decimal raises TypeError in scipy's arithmetic, and so here)."""
    return not isinstance(sigma, (float, int, np.float64, np.integer)) or isinstance(sigma, bool)


def _truncate_for(sigma, truncate, radius):
    """A float64 truncate t with int(t·σ + 0.5) == radius, the radius scipy gives
    (int() rounds toward zero there: a negative truncate can give radius 0)."""
    if radius == 0:
        return 0.0
    if float(truncate) * sigma + 0.5 < 2.0 ** 62 and int(float(truncate) * sigma + 0.5) == radius:
        return float(truncate)
    t = radius / sigma
    while int(t * sigma + 0.5) > radius:
        t = np.nextafter(t, 0.0)
    while int(t * sigma + 0.5) < radius:
        t = np.nextafter(t, np.inf)
    return float(t)


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _threads(threads):
    """The CPUs this process may run on, or `threads` up to them: more
    threads than CPUs only share the CPUs, and a huge count would spend
    minutes starting threads (capped, with a warning)."""
    if threads is None:
        return _cpus()
    if int(threads) < 1:
        raise ValueError("threads must be at least 1")
    if int(threads) > _cpus():
        import warnings
        warnings.warn(f"threads={int(threads)} is more than the {_cpus()} CPU(s) this process may "
                      f"run on: {_cpus()} used", RuntimeWarning, stacklevel=3)
        return _cpus()
    return int(threads)


def _native_order(a):
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def gaussian_filter(input, sigma, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                    *, radius=None, axes=None, threads=None):
    """Multidimensional Gaussian filter: ``scipy.ndimage.gaussian_filter``, bit for bit.

    Parameters
    ----------
    input : array_like
        The input array: integers of 8 to 64 bits, float32, float64,
        complex64 or complex128 (real and imaginary parts filtered apart, as
        scipy does), any strides or memory order.
    sigma : scalar or sequence of scalars
        Standard deviation of the Gaussian kernel, per axis or one for all.
        Every axis with σ > 0 is smoothed, as in scipy: a 4-D (x, y, z, t)
        series given one σ is blurred across time too. Give (σ, σ, σ, 0) to
        smooth it volume by volume, as ``nismooth run`` and nilearn do.
    order : int or sequence of ints
        The derivative's order per axis (0: smoothing), scipy's kernels
        bit for bit; a negative order raises ``ValueError``.
    output : array or dtype, optional
        The array to place the output in, or its dtype. By default an array
        of the input's dtype is created.
    mode : str or sequence of str
        'reflect', 'constant', 'nearest', 'mirror', 'wrap' (and scipy's
        'grid-' aliases), one for all axes or one per axis.
    cval : scalar
        The value outside the array with mode 'constant'.
    truncate : float
        The kernel's radius in standard deviations: ``int(truncate * sigma + 0.5)``.
    radius : None or int or sequence of ints
        The kernel's radius, overriding ``truncate``.
    axes : tuple of int or None
        The axes to filter (default all), ``sigma``, ``order``, ``mode`` and
        ``radius`` then given per listed axis.
    threads : int, optional
        Threads to use (default: the CPUs this process may run on). The GIL
        is released while they run.

    Returns
    -------
    numpy.ndarray
        The filtered array (``output`` when one was given).
    """
    input = np.asarray(input)
    if input.dtype.kind == "c" and _filters_any(sigma, axes, input.ndim):
        return _complex_parts(gaussian_filter, input, output, cval, sigma, order=order, mode=mode,
                              truncate=truncate, radius=radius, axes=axes, threads=threads)
    out = _output(output, input)
    axes = _axes(axes, input.ndim)
    n = len(axes)
    orders = _per_axis(order, n, "order")
    sigmas = _per_axis(sigma, n, "sigma")
    modes = _per_axis(mode, n, "mode")
    radii = _per_axis(radius, n, "radius")
    passes = []
    # As scipy: an axis it skips (σ ≤ 1e-15) checks nothing, and with none
    # to filter the input is copied, whatever its dtype.
    for ax, s, o, m, r in zip(axes, sigmas, orders, modes, radii):
        if s > 1e-15:
            if not isinstance(m, str) or m not in _MODES:
                raise RuntimeError(f"boundary mode not supported: {m!r}")
            passes.append((ax, s, o, _MODES[m], _radius(s, truncate, r)))
    if not passes:
        out[...] = input
        return out
    _check_dtype(input.dtype)
    _check_dtype(out.dtype)
    # Refused even when there is nothing to write, as scipy refuses it.
    if not out.flags.writeable:
        raise ValueError("output array is read-only.")
    if out.size == 0:
        return out
    if bool in (input.dtype, out.dtype):
        return _via_float64(input, out, passes, truncate, cval, threads)
    return _filter_passes(input, out, passes, truncate, cval, threads)


def _via_float64(input, out, passes, truncate, cval, threads, own_kernel=False):
    """Boolean arrays, which the engine does not take: scipy's C code reads
    a bool as its byte and writes a pass's double into one as C casts it to
    `npy_bool` (an unsigned char: truncated, so 0.7 is False), so each pass
    runs in float64 and is cast to the output's dtype that way."""
    def as_float(a):
        return a.view(np.uint8).astype(np.float64) if a.dtype == bool else a

    cur = input
    for p in passes:
        tmp = np.empty(input.shape, np.float64)
        _filter_passes(as_float(cur), tmp, [p], truncate, cval, threads, own_kernel)
        with np.errstate(invalid="ignore"):
            cur = tmp.astype(np.int64).astype(np.uint8).view(np.bool_) if out.dtype == bool else tmp.astype(out.dtype)
    if out.dtype == bool:
        out.view(np.uint8)[...] = cur.view(np.uint8)
    else:
        out[...] = cur
    return out



def _axis(axis, ndim):
    """numpy's normalize_axis_index, as scipy's correlate1d calls it."""
    try:
        from numpy.lib.array_utils import normalize_axis_index
    except ImportError:  # numpy 1
        from numpy.core.multiarray import normalize_axis_index
    return normalize_axis_index(axis, ndim)


def gaussian_filter1d(input, sigma, axis=-1, order=0, output=None, mode="reflect", cval=0.0, truncate=4.0,
                      *, radius=None, threads=None):
    """1-D Gaussian filter: ``scipy.ndimage.gaussian_filter1d``, bit for bit.

    `sigma`, `order`, `mode`, `truncate` and `radius` are those of one axis
    of :func:`gaussian_filter`; `axis` the axis filtered (default the last).
    Unlike ``gaussian_filter``, a σ of 0 is not skipped: its one weight is
    NaN, as in scipy. `threads` as in ``gaussian_filter``.
    """
    lw = _radius(sigma, truncate, radius)
    if order < 0:
        raise ValueError("order must be non-negative")
    if lw <= 1 << 16:
        # scipy makes the kernel before it looks at the array: what its
        # arithmetic raises (a σ of 0 divides by zero) comes first.
        with np.errstate(all="ignore"):
            _numpy_kernel(sigma, order, lw)
    input = np.asarray(input)
    if input.dtype.kind == "c":
        # scipy's correlate1d asks for a complex output: a real dtype given
        # as a class or dtype is promoted, with its warning.
        if isinstance(output, (type, np.dtype)) and np.dtype(output).kind != "c":
            import warnings
            warnings.warn("promoting specified output dtype to complex", stacklevel=2)
            output = np.promote_types(output, np.complex64)
        return _complex_parts(gaussian_filter1d, input, output, cval, sigma, axis=axis, order=order, mode=mode,
                              truncate=truncate, radius=radius, threads=threads)
    _check_dtype(input.dtype)
    out = _output(output, input)
    _check_dtype(out.dtype)
    axis = _axis(axis, input.ndim)
    if not isinstance(mode, str) or mode not in _MODES:
        raise RuntimeError("boundary mode not supported")
    if not out.flags.writeable:
        raise ValueError("output array is read-only.")
    if out.size == 0:
        return out
    # σ ≤ 1e-15, which gaussian_filter skips, has numpy's weights (1, or NaN).
    tiny = not float(sigma) > 1e-15
    one = [(axis, sigma, order, _MODES[mode], lw)]
    if bool in (input.dtype, out.dtype):
        return _via_float64(input, out, one, truncate, cval, threads, own_kernel=tiny)
    return _filter_passes(input, out, one, truncate, cval, threads, own_kernel=tiny)


def gaussian_laplace(input, sigma, output=None, mode="reflect", cval=0.0, *, axes=None, **kwargs):
    """Laplace filter with Gaussian second derivatives:
    ``scipy.ndimage.gaussian_laplace``, bit for bit.

    The sum over the filtered axes of :func:`gaussian_filter` with order 2 on
    that axis, computed as scipy computes it (the sum in the output's
    dtype). `kwargs` go to ``gaussian_filter`` (``truncate``, ``radius``,
    ``threads``).
    """
    input = np.asarray(input)
    axes = _axes(axes, input.ndim)
    sigma = _per_axis(sigma, len(axes), "sigma")
    if len(axes) < input.ndim:
        full = [0] * input.ndim
        for sg, ax in zip(sigma, axes):
            full[ax] = sg
        sigma = full
    return _sum_of_derivatives(input, sigma, 2, output, mode, cval, axes, kwargs, square=False)


def gaussian_gradient_magnitude(input, sigma, output=None, mode="reflect", cval=0.0, *, axes=None, **kwargs):
    """Gradient magnitude with Gaussian derivatives:
    ``scipy.ndimage.gaussian_gradient_magnitude``, bit for bit.

    The square root of the sum over the filtered axes of the squared
    :func:`gaussian_filter` with order 1 on that axis (σ smoothing every
    axis, as scipy's does), in the output's dtype. `kwargs` go to
    ``gaussian_filter``.
    """
    input = np.asarray(input)
    axes = _axes(axes, input.ndim)
    return _sum_of_derivatives(input, sigma, 1, output, mode, cval, axes, kwargs, square=True)


def _sum_of_derivatives(input, sigma, order, output, mode, cval, axes, kwargs, square):
    """scipy's generic_laplace (square=False) and generic_gradient_magnitude
    (square=True) with its Gaussian derivative: each axis's derivative
    filtered over every axis, the first into the output, the rest added."""
    out = _output(output, input)
    if not axes:
        out[...] = input[...]
        return out
    modes = _per_axis(mode, len(axes), "mode")

    def derivative(axis, into, m):
        orders = [0] * input.ndim
        orders[axis] = order
        return gaussian_filter(input, sigma, orders, into, m, cval, **kwargs)

    derivative(axes[0], out, modes[0])
    if square:
        np.multiply(out, out, out)
    for ax, m in zip(axes[1:], modes[1:]):
        tmp = derivative(ax, out.dtype, m)
        if square:
            np.multiply(tmp, tmp, tmp)
        out += tmp
    if square:
        np.sqrt(out, out, casting="unsafe")
    return out


def _filters_any(sigma, axes, ndim):
    """Whether gaussian_filter filters any axis (σ > 1e-15): scipy copies
    complex input into a real output when it does not."""
    return any(float(s) > 1e-15 for s in _per_axis(sigma, len(_axes(axes, ndim)), "sigma"))


def _complex_parts(fn, input, output, cval, *args, **kwargs):
    """scipy's _complex_via_real_components: the real and imaginary parts
    each filtered, with cval's parts, into the output's parts."""
    out = _output(output, input)
    if out.dtype.kind != "c":
        raise RuntimeError("output must have complex dtype")
    fn(input.real, *args, output=out.real, cval=np.real(cval), **kwargs)
    fn(input.imag, *args, output=out.imag, cval=np.imag(cval), **kwargs)
    return out


def _check_dtype(dtype):
    """scipy's words (RuntimeError: array type … not supported), then ours."""
    if dtype not in _DTYPES and dtype.newbyteorder("=") not in _DTYPES:
        raise RuntimeError(f"array type {dtype!r} not supported (integers of 8 to 64 bits, "
                           "float32, float64, complex64, complex128)")

def _filter_passes(input, out, passes, truncate, cval, threads, own_kernel=False):
    """scipy's 1-D passes (axis, σ, order, mode, radius), in order, from
    `input` into `out`; `own_kernel`: the weights from numpy whatever σ."""
    if not (hasattr(cval, "__float__") or hasattr(cval, "__index__")):
        # As scipy's C code converts it (a str is no real number).
        raise TypeError(f"must be real number, not {type(cval).__name__}")
    threads = _threads(threads)
    for ax, s, o, m, lw in passes:
        _check_kernel_memory(lw, input.shape[ax], threads)
    # A σ of another float dtype than float64 makes another kernel in scipy,
    # and so does a derivative order: numpy computes those weights here, as
    # scipy does; plain float64 ones the native side computes (the same
    # bits), from a float64 truncate that gives scipy's radius (a float32
    # truncate rounds in float32 there).
    if own_kernel or any(_own_float(s) or o != 0 for _, s, o, _, _ in passes):
        passes = [(ax, float(s), m, ("weights", *_half_kernel(s, o, lw))) for ax, s, o, m, lw in passes]
    else:
        passes = [(ax, float(s), m, _truncate_for(float(s), truncate, lw)) for ax, s, o, m, lw in passes]
    src = _native_order(input)
    shape = input.shape
    if _c_like(src):
        # A C-ordered array is a Fortran-ordered one with its axes reversed:
        # no transposing copy, each pass renamed (scipy's order is kept).
        # A strided view in C's order (a complex array's real part, a
        # slice) is copied in that order: a straight copy, not a transpose.
        src = np.ascontiguousarray(src).T
        shape = src.shape
        passes = [(input.ndim - 1 - ax, s, m, t) for ax, s, m, t in passes]
        direct = out.flags.c_contiguous and out.dtype.isnative and out.flags.aligned
        work, target = (out.T if direct else _scratch(src, input, out, shape)), out.T
    else:
        src = np.asfortranarray(src)
        direct = out.flags.f_contiguous and out.dtype.isnative and out.flags.aligned
        work, target = (out if direct else _scratch(src, input, out, shape)), out
    for call in _calls(shape, passes):
        spatial, volumes, sig, trunc, m, order = call
        weights, odd = None, [False, False, False]
        if isinstance(trunc, tuple):
            trunc, (weights, odd) = 4.0, trunc
        _native.filter(src, work, spatial, volumes, sig, trunc, m, float(cval), threads, order, weights, odd)
        src = work
    if work is not target and not np.shares_memory(work, target):
        target[...] = work
    return out


def _scratch(src, input, out, shape):
    """Where the passes write when `out` cannot be written directly (a
    strided view such as a complex array's part): the copy of the input
    made above, filtered in place, when there is one of out's dtype (no
    second buffer, no page faults of a fresh one); else a fresh array."""
    dtype = out.dtype.newbyteorder("=")
    if src.dtype == dtype and not np.shares_memory(src, input):
        return src
    return np.empty(shape, dtype=dtype, order="F")


def _c_like(a):
    """Whether `a` is laid out in C's order (its last axis the fastest),
    contiguous or not, and not also in Fortran's."""
    if a.flags.c_contiguous:
        return not a.flags.f_contiguous
    if a.flags.f_contiguous:
        return False
    steps = [abs(st) for st, n in zip(a.strides, a.shape) if n > 1]
    return steps == sorted(steps, reverse=True)


def _calls(shape, passes):
    """Native calls for scipy's passes, in scipy's order: one call when the
    passes are over distinct axes among the first three with one mode and
    one truncate (volumes beyond; the native side runs them in the order
    given), else one call per pass, an axis beyond the third seen as the
    middle one of (before, axis, after). A pass's truncate may instead be
    ("weights", half-kernel): the call then carries the weights, a list per
    spatial axis, in the truncate's place."""
    dims = list(shape) + [1] * max(0, 3 - len(shape))
    volumes = int(np.prod(dims[3:], dtype=np.int64)) if len(dims) > 3 else 1
    axes = [p[0] for p in passes]
    weighted = isinstance(passes[0][3], tuple)
    same = {p[2] for p in passes} if weighted else {(p[2], p[3]) for p in passes}
    together = len(set(axes)) == len(axes) and all(a < 3 for a in axes) and len(same) == 1

    def kernel(slots):
        """The call's sigmas and its truncate (or its weights and which are
        odd) for {axis: pass}."""
        sig = [0.0, 0.0, 0.0]
        half = [None, None, None]
        odd = [False, False, False]
        for ax, (_, s, _, t) in slots.items():
            sig[ax] = s
            if weighted:
                half[ax], odd[ax] = t[1], t[2]
        return sig, ((half, odd) if weighted else next(iter(slots.values()))[3])

    if together:
        sig, trunc = kernel({p[0]: p for p in passes})
        order = axes + [a for a in range(3) if a not in axes]
        return [(dims[:3], volumes, sig, trunc, passes[0][2], order)]
    calls = []
    for p in passes:
        ax = p[0]
        if ax < 3:
            sig, trunc = kernel({ax: p})
            calls.append((dims[:3], volumes, sig, trunc, p[2], [0, 1, 2]))
        else:
            before = int(np.prod(dims[:ax], dtype=np.int64))
            after = int(np.prod(dims[ax + 1:], dtype=np.int64))
            sig, trunc = kernel({1: p})
            calls.append(([before, dims[ax], after], 1, sig, trunc, p[2], [0, 1, 2]))
    return calls


def _nibabel():
    try:
        import nibabel
    except ImportError as e:
        raise ImportError(
            "nismooth.smooth_img reads and returns nibabel images, and nibabel is not installed: "
            "pip install 'nismooth[nilearn]' (or 'nismooth[nibabel]')"
        ) from e
    return nibabel


def _nilearn():
    """nilearn's own reading, image making and surface smoothing, when it is
    installed: with them, the image smooth_img returns is the one nilearn's
    own version makes (its header rules change between releases); without
    them, nilearn 0.14's rules, written out below."""
    try:
        from nilearn.image import image

        return dict(check_niimg=image.check_niimg, get_data=image._get_data, new_img_like=image.new_img_like,
                    niters=image._mris_fwhm_to_niters, smooth_surface=image._smooth_surface_img)
    except (ImportError, AttributeError):
        return None


def _is_surface(img):
    return any(c.__name__ == "SurfaceImage" and c.__module__.startswith("nilearn")
               for c in type(img).__mro__)


def smooth_img(imgs, fwhm):
    """Smooth images by a Gaussian of full width at half maximum `fwhm` mm:
    ``nilearn.image.smooth_img``, bit for bit (nilearn 0.14).

    Parameters
    ----------
    imgs : str, os.PathLike, nibabel image, or an iterable of them
        3-D or 4-D NIfTI images or their paths (a 4-D image is smoothed
        volume by volume). nilearn's ``SurfaceImage`` (alone or a list of
        them) is handed to nilearn, which smooths it along its mesh;
        without nilearn installed it raises ``TypeError``.
    fwhm : scalar, sequence of 3 scalars, 'fast' or None
        The kernel's FWHM in mm, per axis or one for all. None: no
        smoothing; 0 warns and does none, as nilearn; 'fast': nilearn's
        [0.2, 1, 0.2] neighbour average.

    Returns
    -------
    nibabel image, or a list of them when `imgs` was an iterable
        Each smoothed image with its input's affine and header as nilearn
        makes them (scaling reset, cal_min/cal_max set to the data's range):
        integer data becomes float32 (64-bit integers float64), non-finite
        values 0.
    """
    nib = _nibabel()
    if isinstance(imgs, os.PathLike):
        imgs = os.fspath(imgs)
    single = isinstance(imgs, str) or not hasattr(imgs, "__iter__")
    many = [imgs] if single else list(imgs)
    # As nilearn: an empty list counts as surfaces (`all` of nothing).
    if _is_surface(imgs) or (not single and all(_is_surface(i) for i in many)):
        out = _smooth_surfaces(many, fwhm)
    else:
        nl = _nilearn()
        out = [_smooth_volume(nib, nl, img, fwhm) for img in many]
    return out[0] if single else out


def _smooth_surfaces(imgs, fwhm):
    """Surfaces are smoothed along their mesh, which nilearn does."""
    if fwhm is not None and hasattr(fwhm, "__iter__"):
        raise TypeError("For surface data, 'fwhm' must be a scalar.")
    if not imgs:
        return []
    nl = _nilearn()
    if nl is None:
        raise TypeError(f"nismooth.smooth_img smooths NIfTI images; a {type(imgs[0]).__name__} is smoothed "
                        "along its mesh by nilearn, which is not installed: pip install 'nismooth[nilearn]'")
    return [nl["smooth_surface"](img, nl["niters"](fwhm, img)) for img in imgs]


def _smooth_volume(nib, nl, img, fwhm):
    """One image as nilearn's volume branch smooths it: read, smoothed as
    an array, made into an image like the input."""
    if nl is not None:
        img = nl["check_niimg"](img)
        data = nl["get_data"](img)
    else:
        if isinstance(img, str):
            img = nib.load(img)
        if not (hasattr(img, "dataobj") and hasattr(img, "affine")):
            raise TypeError(f"nismooth.smooth_img takes NIfTI images (nibabel) or their paths, not {img!r}")
        data = np.asanyarray(img.dataobj)
    filtered = _smooth_array(data, img.affine, fwhm)
    if nl is not None:
        return nl["new_img_like"](img, filtered, img.affine)
    return _new_img_like(nib, img, filtered)


def _smooth_array(arr, affine, fwhm):
    """nilearn's smooth_array (ensure_finite, copy), our filter for its
    gaussian_filter1d passes."""
    import warnings

    if isinstance(fwhm, (int, float)) and fwhm == 0.0:
        warnings.warn(f"The parameter 'fwhm' for smoothing is specified as {fwhm}. "
                      "Setting it to None (no smoothing will be performed)", stacklevel=4)
        fwhm = None
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.float64 if arr.dtype in (np.int64, np.uint64) else np.float32)
    else:
        arr = arr.copy()
    arr[~np.isfinite(arr)] = 0
    if isinstance(fwhm, str) and fwhm == "fast":
        return _fast_smooth_array(arr)
    if fwhm is None:
        return arr
    fwhm = np.asarray([0.0 if f is None else f for f in np.asarray([fwhm]).ravel()])
    scale = affine[:3, :3]
    sigma = fwhm / (np.sqrt(8 * np.log(2)) * np.sqrt(np.sum(scale ** 2, axis=0)))
    for n, s in enumerate(sigma):
        if s > 0.0:
            # nilearn's own call; a σ too small for gaussian_filter still
            # filters (its one weight 1, or NaN, as numpy makes it).
            gaussian_filter1d(arr, s, output=arr, axis=n)
    return arr


def _fast_smooth_array(arr):
    """nilearn's fwhm='fast': each voxel plus 0.2 of its six neighbours,
    over 2.2, in nilearn's order of sums (so its bits)."""
    weighted = 0.2 * arr
    out = arr.copy()
    out[:-1] += weighted[1:]
    out[1:] += weighted[:-1]
    out[:, :-1] += weighted[:, 1:]
    out[:, 1:] += weighted[:, :-1]
    out[:, :, :-1] += weighted[:, :, 1:]
    out[:, :, 1:] += weighted[:, :, :-1]
    out /= 1 + 6 * 0.2
    return out


def _new_img_like(nib, ref, data):
    """nilearn 0.14's new_img_like(ref, data, ref.affine): the input's
    header copied, its scaling reset and cal_min/cal_max set to the data's
    range; a Nifti1Pair comes back as a Nifti1Image."""
    header = None
    if ref.header is not None:
        header = ref.header.copy()
        try:
            "scl_slope" in header  # noqa: B015 (a header without keys has no such fields)
        except TypeError:
            pass
        else:
            for key in ("scl_slope", "scl_inter", "glmax"):
                if key in header:
                    header[key] = 0.0
            if "cal_max" in header:
                header["cal_max"] = np.max(data) if data.size > 0 else 0.0
            if "cal_min" in header:
                header["cal_min"] = np.min(data) if data.size > 0 else 0.0
    klass = nib.Nifti1Image if ref.__class__ is nib.Nifti1Pair else ref.__class__
    return klass(data, ref.affine, header=header)
