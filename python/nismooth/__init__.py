"""nismooth: exact, fast Gaussian smoothing.

``gaussian_filter`` is ``scipy.ndimage.gaussian_filter``, bit for bit, run by
nismooth's vector code on several threads with the GIL released;
``smooth_img`` is ``nilearn.image.smooth_img``, bit for bit.
"""
from . import _native

__all__ = ["gaussian_filter", "gaussian_filter1d", "gaussian_laplace", "gaussian_gradient_magnitude",
           "smooth_img"]
__version__ = _native.__version__


def __getattr__(name):
    # The API (and numpy) load on first use: the `nismooth` command imports
    # this package too, and numpy's BLAS threads, started at import, spin on
    # the CPUs its run is measured on.
    if name in __all__:
        from . import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'nismooth' has no attribute {name!r}")


def __dir__():
    return [*globals(), *__all__]
