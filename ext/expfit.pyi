import numpy as np
from numpy.typing import NDArray

def lm_refine(
    yb: NDArray[np.float64],
    t_ms: NDArray[np.float64],
    log_tau: NDArray[np.float64],
    coef: NDArray[np.float64],
    log_lo: float,
    log_hi: float,
    log_ratio: float,
    n_iter: int,
    cost_out: NDArray[np.float64],
) -> None: ...
