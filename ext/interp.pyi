import numpy as np
from numpy.typing import NDArray

def interp_span(
    data: NDArray[np.float64],
    rows: NDArray[np.intp],
    start: int,
    stop: int,
    n_left: int,
    n_right: int,
    order: int,
) -> None: ...
