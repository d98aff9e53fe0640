import numpy as np
from numpy.typing import NDArray

def minmax_decimate(
    data: NDArray[np.float64],
    bucket: int,
    out: NDArray[np.float64],
) -> int: ...
