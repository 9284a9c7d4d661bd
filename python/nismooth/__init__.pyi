"""Type hints for nismooth: scipy's gaussian_filter and nilearn's smooth_img, bit for bit."""
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

def smooth_img(img: Union[str, PathLike, object], fwhm: Optional[_Scalars]) -> object: ...
