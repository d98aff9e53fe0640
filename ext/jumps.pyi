import numpy as np
from numpy.typing import NDArray

def jump_stats(
    data: NDArray[np.float64],
    rows: NDArray[np.intp],
    prev: NDArray[np.float64],
    scale: float,
    threshold: NDArray[np.float64],
    count: NDArray[np.int32],
    norm: NDArray[np.float64],
) -> None: ...
