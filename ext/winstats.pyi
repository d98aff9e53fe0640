import numpy as np
from numpy.typing import NDArray

def window_stats(
    x: NDArray[np.float64],
    piece: int,
    sd: NDArray[np.float64],
    hf: NDArray[np.float64],
    xmax: NDArray[np.float64],
    xmin: NDArray[np.float64],
    at_max: NDArray[np.intp],
    at_min: NDArray[np.intp],
    piece_sd: NDArray[np.float64],
    piece_hf: NDArray[np.float64],
) -> None: ...
