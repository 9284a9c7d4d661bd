"""Type hints for nismooth: scipy's Gaussian filters and nilearn's smooth_img, bit for bit."""
from os import PathLike
from typing import Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str

_Mode = str
_Scalars = Union[float, Sequence[float]]

def gaussian_filter(
    input: npt.ArrayLike,
    sigma: _Scalars,
    order: Union[int, Sequence[int]] = 0,
    output: Optional[Union[np.ndarray, npt.DTypeLike]] = None,
    mode: Union[_Mode, Sequence[_Mode]] = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    *,
    radius: Optional[Union[int, Sequence[int]]] = None,
    axes: Optional[Union[int, Sequence[int]]] = None,
    threads: Optional[int] = None,
) -> np.ndarray: ...

def gaussian_filter1d(
    input: npt.ArrayLike,
    sigma: float,
    axis: int = -1,
    order: int = 0,
    output: Optional[Union[np.ndarray, npt.DTypeLike]] = None,
    mode: _Mode = "reflect",
    cval: float = 0.0,
    truncate: float = 4.0,
    *,
    radius: Optional[int] = None,
    threads: Optional[int] = None,
) -> np.ndarray: ...

def gaussian_laplace(
    input: npt.ArrayLike,
    sigma: _Scalars,
    output: Optional[Union[np.ndarray, npt.DTypeLike]] = None,
    mode: Union[_Mode, Sequence[_Mode]] = "reflect",
    cval: float = 0.0,
    *,
    axes: Optional[Union[int, Sequence[int]]] = None,
    **kwargs: object,
) -> np.ndarray: ...

def gaussian_gradient_magnitude(
    input: npt.ArrayLike,
    sigma: _Scalars,
    output: Optional[Union[np.ndarray, npt.DTypeLike]] = None,
    mode: Union[_Mode, Sequence[_Mode]] = "reflect",
    cval: float = 0.0,
    *,
    axes: Optional[Union[int, Sequence[int]]] = None,
    **kwargs: object,
) -> np.ndarray: ...

def smooth_img(
    imgs: Union[str, PathLike, object, Sequence[object]], fwhm: Optional[Union[_Scalars, str]]
) -> Union[object, list]: ...
