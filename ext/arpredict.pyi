import numpy as np
from numpy.typing import NDArray

def ar_predict(
    coeffs: NDArray[np.float64], history: NDArray[np.float64], n_ahead: int,
    out: NDArray[np.float64],
) -> None: ...
